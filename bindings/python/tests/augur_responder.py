"""A responder that answers the way Augur's Python orchestrator does, for tests.

Written from the wire contract (PROTOCOL.md), with Augur's quirks kept where a
client can see them: no `request_id` is ever echoed, an ACK is answered with an
empty payload, NEW with `{"key": k}` or `{"wait": n}` (n = seconds until the
earliest refresh + a margin; Augur's margin is 5 s, the tests use less), and an
unknown platform on NEW gets no answer at all.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from typing import Dict, List

import redis

ANNOUNCE = "augur-oauth-announce"
REQUEST = "worker-oath-request"


class AugurResponder:
    def __init__(self, url: str, wait_margin: float = 1.0) -> None:
        self.conn = redis.Redis.from_url(url, decode_responses=True)
        self.pubsub = self.conn.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(ANNOUNCE, REQUEST)
        self.fresh: Dict[str, List[str]] = {}
        self.expired: Dict[str, Dict[str, float]] = {}
        self.invalid: Dict[str, List[str]] = {}
        self.wait_margin = wait_margin
        self.payloads: List[dict] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.pubsub.close()
        self.conn.close()

    def _run(self) -> None:
        while not self.stopping.is_set():
            msg = self.pubsub.get_message(timeout=0.05)
            if not msg or msg.get("type") != "message":
                continue
            try:
                body = json.loads(msg["data"])
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            self.payloads.append(body)
            if msg["channel"] == ANNOUNCE:
                self._announce(body)
            else:
                self._request(body)

    def _reply(self, channel: str, body: dict, payload: str) -> None:
        self.conn.publish(f"{channel}-{body['requester_id']}", payload)

    def _refresh(self, platform: str) -> None:
        now = time.time()
        for key, at in list(self.expired.get(platform, {}).items()):
            if at <= now:
                del self.expired[platform][key]
                self.fresh[platform].append(key)

    def _announce(self, body: dict) -> None:
        kind = body.get("type")
        platform = body.get("key_platform")
        if kind == "PUBLISH":
            self.fresh.setdefault(platform, []).append(body["key_str"])
            self.expired.setdefault(platform, {})
            self.invalid.setdefault(platform, [])
        elif kind == "UNPUBLISH":
            key = body["key_str"]
            if key in self.fresh.get(platform, []):
                self.fresh[platform].remove(key)
            self.expired.get(platform, {}).pop(key, None)
        elif kind == "ACK":
            self._reply(ANNOUNCE, body, "")
        elif kind == "LIST_PLATFORMS":
            self._reply(ANNOUNCE, body, json.dumps(list(self.fresh)))
        elif kind == "LIST_KEYS":
            if platform not in self.fresh:
                self._reply(ANNOUNCE, body, json.dumps({"status": "Platform not found"}))
            else:
                keys = self.fresh[platform] + list(self.expired[platform])
                self._reply(ANNOUNCE, body, json.dumps(keys))
        elif kind == "LIST_INVALID_KEYS":
            if platform not in self.fresh:
                self._reply(ANNOUNCE, body, json.dumps({"status": "Platform not found"}))
            else:
                self._reply(ANNOUNCE, body, json.dumps(self.invalid[platform]))

    def _request(self, body: dict) -> None:
        kind = body.get("type")
        platform = body.get("key_platform")
        if platform not in self.fresh:
            return  # Augur logs it and answers nothing
        key = body.get("key_str")
        if kind == "EXPIRE" and key in self.fresh[platform]:
            self.fresh[platform].remove(key)
            self.expired[platform][key] = float(body["refresh_time"])
        elif kind == "INVALIDATE":
            if key in self.fresh[platform]:
                self.fresh[platform].remove(key)
            self.expired[platform].pop(key, None)
            self.invalid[platform].append(key)
        elif kind == "NEW":
            self._refresh(platform)
            if self.fresh[platform]:
                reply = {"key": random.choice(self.fresh[platform])}
            elif self.expired[platform]:
                left = min(self.expired[platform].values()) - time.time()
                reply = {"wait": max(1, math.ceil(left + self.wait_margin))}
            else:
                reply = {"key": None}
            self._reply(REQUEST, body, json.dumps(reply))
