//! The brokers' wire protocols, as much as the raw clients need: RESP2 for
//! Redis, the NATS text protocol (with keyman's chunk headers).

use super::*;

// ---------------------------------------------------------------- RESP

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$n` (None: the null bulk string)
    Bulk(Option<Vec<u8>>),
    /// `*n` (None: the null array)
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            Resp::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

pub(super) fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

pub(super) fn bad(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

pub(super) fn read_resp(r: &mut impl BufRead) -> io::Result<Resp> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let num = || {
        rest.parse::<i64>()
            .map_err(|e| bad(format!("{line:?}: {e}")))
    };
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(num()?),
        "$" => {
            let n = num()?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut b = vec![0u8; usize::try_from(n).map_err(bad)? + 2];
                r.read_exact(&mut b)?;
                b.truncate(b.len() - 2);
                Resp::Bulk(Some(b))
            }
        }
        "*" => {
            let n = num()?;
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(read_resp(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        _ => return Err(bad(format!("not RESP: {line:?}"))),
    })
}

pub(super) fn write_command(w: &mut impl Write, args: &[&[u8]]) -> io::Result<()> {
    write!(w, "*{}\r\n", args.len())?;
    for a in args {
        write!(w, "${}\r\n", a.len())?;
        w.write_all(a)?;
        w.write_all(b"\r\n")?;
    }
    Ok(())
}

// ---------------------------------------------------------------- NATS

/// One thing a NATS server sends.
pub(super) enum NatsIn {
    Msg {
        subject: String,
        payload: Vec<u8>,
        /// `Keyman-Chunk` of a message that keyman's NATS transport split:
        /// chunk id, index and count.
        chunk: Option<(String, usize, usize)>,
    },
    Ping,
    Pong,
    Err(String),
    Other,
}

pub(super) fn read_nats(r: &mut impl BufRead) -> io::Result<NatsIn> {
    let line = read_line(r)?;
    let mut parts = line.split_whitespace();
    let op = parts.next().unwrap_or("").to_ascii_uppercase();
    let args: Vec<&str> = parts.collect();
    let size = |s: Option<&&str>| -> io::Result<usize> {
        s.ok_or_else(|| bad(format!("short: {line:?}")))?
            .parse::<usize>()
            .map_err(|e| bad(format!("{line:?}: {e}")))
    };
    Ok(match op.as_str() {
        // MSG <subject> <sid> [reply-to] <#bytes>
        "MSG" => {
            let n = size(args.last())?;
            let mut b = vec![0u8; n + 2];
            r.read_exact(&mut b)?;
            b.truncate(n);
            NatsIn::Msg {
                subject: args.first().copied().unwrap_or("").to_owned(),
                payload: b,
                chunk: None,
            }
        }
        // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
        "HMSG" => {
            let total = size(args.last())?;
            let header = size(args.get(args.len().saturating_sub(2)))?;
            let mut b = vec![0u8; total + 2];
            r.read_exact(&mut b)?;
            b.truncate(total);
            let payload = b.split_off(header.min(total));
            NatsIn::Msg {
                subject: args.first().copied().unwrap_or("").to_owned(),
                payload,
                chunk: chunk_header(&b),
            }
        }
        "PING" => NatsIn::Ping,
        "PONG" => NatsIn::Pong,
        "-ERR" => NatsIn::Err(line.clone()),
        _ => NatsIn::Other,
    })
}

/// The `Keyman-Chunk: <id> <index> <count> <total>` header of a NATS header block.
pub(super) fn chunk_header(block: &[u8]) -> Option<(String, usize, usize)> {
    let text = String::from_utf8_lossy(block);
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("Keyman-Chunk:"))?;
    let mut parts = value.split_whitespace();
    let id = parts.next()?.to_owned();
    let index = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    Some((id, index, count))
}

/// Opens a NATS connection: reads INFO, sends CONNECT.
pub(super) fn nats_connect(port: u16) -> io::Result<(BufReader<TcpStream>, BufWriter<TcpStream>)> {
    let stream = connect_stream(port)?;
    let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(1 << 20, stream);
    let info = read_line(&mut reader)?;
    if !info.starts_with("INFO") {
        return Err(bad(format!("no INFO from nats-server: {info:?}")));
    }
    writer.write_all(
        br#"CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1,"lang":"rust","version":"0.0.0"}"#,
    )?;
    writer.write_all(b"\r\n")?;
    writer.flush()?;
    Ok((reader, writer))
}

/// Sends PING and reads until PONG, answering the server's PINGs.
pub(super) fn nats_round_trip(
    reader: &mut BufReader<TcpStream>,
    writer: &mut BufWriter<TcpStream>,
) -> io::Result<()> {
    writer.write_all(b"PING\r\n")?;
    writer.flush()?;
    loop {
        match read_nats(reader)? {
            NatsIn::Pong => return Ok(()),
            NatsIn::Ping => {
                writer.write_all(b"PONG\r\n")?;
                writer.flush()?;
            }
            NatsIn::Err(e) => return Err(bad(e)),
            _ => {}
        }
    }
}
