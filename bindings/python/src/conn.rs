//! [`Conn`]: one process's tokio runtime, broker connection and keyman client.

use crate::call::{Failure, INNER_DEADLINE, until_after, within};
use keyman::protocol::{Channels, Request};
use keyman::service::{self, Bus, ClientConfig, KeyError, KeySource};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Which of keyman's clients a [`Conn`] holds.
pub(crate) enum Role {
    Worker(service::KeyClient),
    Admin(service::KeyPublisher),
}

/// One process's runtime, broker connection and client.
pub(crate) struct Conn {
    rt: Option<tokio::runtime::Runtime>,
    bus: Option<Arc<dyn Bus>>,
    role: Option<Role>,
    channels: Channels,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            {
                // The client and bus may need the runtime to let go of their tasks.
                let _inside = rt.enter();
                self.role = None;
                self.bus = None;
            }
            rt.shutdown_background();
        }
    }
}

impl Conn {
    /// Starts a runtime and connects a worker's (or, with `admin`, an admin's)
    /// client to the broker at `url` within `deadline`.
    pub(crate) fn open(url: &str, admin: bool, deadline: Duration) -> Result<Conn, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyman-client")
            .enable_all()
            .build()
            .map_err(|e| Failure::Key(KeyError::Runtime(e.into())))?;
        let channels = Channels::default();
        let config = ClientConfig {
            channels: channels.clone(),
            deadline: INNER_DEADLINE,
            ..ClientConfig::default()
        };
        let connected = rt.block_on(async {
            let until = until_after(deadline);
            let bus = within(until, deadline, |_| service::connect_url(url)).await?;
            let role = within(until, deadline, |_| {
                let (bus, config) = (bus.clone(), config.clone());
                async move {
                    Ok(if admin {
                        Role::Admin(service::KeyPublisher::connect(bus, config).await?)
                    } else {
                        Role::Worker(service::KeyClient::connect(bus, config).await?)
                    })
                }
            })
            .await?;
            Ok::<_, Failure>((bus, role))
        });
        match connected {
            Ok((bus, role)) => Ok(Conn {
                rt: Some(rt),
                bus: Some(bus),
                role: Some(role),
                channels,
            }),
            Err(e) => {
                rt.shutdown_background();
                Err(e)
            }
        }
    }

    pub(crate) fn block_on<T>(
        &self,
        fut: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        match &self.rt {
            Some(rt) => rt.block_on(fut),
            None => Err(Failure::Closed),
        }
    }

    pub(crate) fn worker(&self) -> Result<&service::KeyClient, Failure> {
        match &self.role {
            Some(Role::Worker(c)) => Ok(c),
            _ => Err(Failure::Argument("this is an admin's connection".into())),
        }
    }

    pub(crate) fn admin(&self) -> Result<&service::KeyPublisher, Failure> {
        match &self.role {
            Some(Role::Admin(p)) => Ok(p),
            _ => Err(Failure::Argument("this is a worker's connection".into())),
        }
    }

    pub(crate) fn bus(&self) -> Result<&Arc<dyn Bus>, Failure> {
        self.bus.as_ref().ok_or(Failure::Closed)
    }

    pub(crate) fn requester_id(&self) -> &str {
        match &self.role {
            Some(Role::Worker(c)) => c.requester_id(),
            Some(Role::Admin(p)) => p.requester_id(),
            None => "",
        }
    }

    /// Publishes a report (EXPIRE or INVALIDATE) on the request channel, then
    /// asks for a new key, both within `deadline`.
    pub(crate) fn report_and_request(
        &self,
        report: Request,
        platform: &str,
        deadline: Duration,
    ) -> Result<String, Failure> {
        let client = self.worker()?;
        let bus = self.bus()?;
        let payload = report.encode();
        let channel = &self.channels.request;
        self.block_on(async {
            let until = until_after(deadline);
            within(until, deadline, |_| async {
                bus.publish(channel, &payload).await.map_err(KeyError::from)
            })
            .await?;
            within(until, deadline, |left| {
                client.request_within(platform, left)
            })
            .await
        })
    }
}
