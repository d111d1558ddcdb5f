"""What WhatsApp does to the fake's instances: links, closes, QR rotation, messages, receipts, restrictions.

Each ``_do_*`` mutates under the lock and returns the webhooks to deliver (delivered outside the lock); the public
methods deliver them and are the Python controls tests and the sandbox call.
"""

from __future__ import annotations

import time
from typing import Any

from sandbox.evolution.hooks import Pending
from sandbox.evolution.model import (
    FINAL_CLOSE_CODES,
    QR_TTL_SECONDS,
    QRCODE_LIMIT,
    FakeInstance,
    Unknown,
    jid,
    pairing_code,
    phone_message_id,
    qr_code_string,
    qr_png_data_url,
)


class WorldMixin:
    def _init_world(self) -> None:
        self.clock = time.monotonic        # the QR clock; tests may replace it
        self.whatsapp_reachable = True     # False: sockets never open; connect loops on `connecting` (notes §8)
        self._restricted: set[str] = set()  # instances under WhatsApp's reach-out timelock (notes §1)
        self._queued: list[Pending] = []   # receipts WhatsApp sends later (delivered by deliver_queued)

    # ------------------------------------------------------------------------------------- public controls

    def link(self, name: str, number: str) -> list[dict[str, Any]]:
        """As if the QR was scanned by the phone ``number``: connection.update connecting, then open with
        ``wuid=<number>@s.whatsapp.net``. Returns the delivery records."""
        return self._deliver_sync(self._do_link(name, number))

    def scan(self, name: str, code: str, number: str) -> list[dict[str, Any]]:
        """A phone scans ``code``: it links only when ``code`` is the instance's current, unexpired QR (a QR shown
        after it rotated, or after the instance opened, refused or closed, is dead — notes §6). Raises ValueError
        when the code is not live."""
        return self._link_with(name, number, lambda qr: qr["code"] == code, "QR code")

    def scan_code(self, code: str, number: str) -> list[dict[str, Any]]:
        """What WhatsApp's servers do when a phone scans ``code``: the instance whose live QR it is gets linked.
        Raises ValueError when no instance shows that code now (expired, rotated, never shown)."""
        with self._lock:
            name = next((i.name for i in self._instances.values() if i.qr and i.qr.get("code") == code), None)
        if name is None:
            raise ValueError("no instance shows this QR code")
        return self.scan(name, code, number)

    def pair(self, name: str, code: str, number: str) -> list[dict[str, Any]]:
        """A phone enters the pairing code ``code`` ("link with phone number"): links only when it is live."""
        return self._link_with(name, number, lambda qr: qr.get("pairingCode") == code, "pairing code")

    def _link_with(self, name: str, number: str, matches, what: str) -> list[dict[str, Any]]:
        with self._lock:
            inst = self._get(name)
            rotated = self._rotate_if_expired(inst)
            live = inst.state == "connecting" and inst.qr is not None and matches(inst.qr)
        records = self._deliver_sync(rotated)
        if not live:
            raise ValueError(f"{what} is not the live code of {name!r}")
        return records + self.link(name, number)

    def close(self, name: str, code: int) -> list[dict[str, Any]]:
        """Socket closed by WhatsApp with ``code``. Final codes (401/402/403/406): status.instance, logout.instance,
        connection.update close (statusReason=code), state close. Others (transient): connection.update connecting
        then open, no close — Evolution reconnects silently (§4.1)."""
        return self._deliver_sync(self._do_close(name, int(code)))

    def kill_socket(self, name: str) -> None:
        """The socket dies but the instance keeps reporting ``open``: sends answer 500 "Connection Closed", delete
        answers 400 and logout 500, until a restart reconnects it (§2.8, §4.4, #2403)."""
        with self._lock:
            self._get(name).socket_dead = True

    def restrict(self, name: str, on: bool = True) -> None:
        """WhatsApp's reach-out timelock: sends to numbers this instance never talked to are accepted (201 PENDING)
        and later come back as ``messages.update`` ERROR, with no error code (field notes §1); chats it already has
        still deliver. The ERROR receipts wait in a queue: :meth:`deliver_queued`."""
        with self._lock:
            (self._restricted.add if on else self._restricted.discard)(self._get(name).name)

    def deliver_queued(self) -> list[dict[str, Any]]:
        """Deliver the receipts WhatsApp sends after a send's answer (the ERRORs of a restricted instance)."""
        with self._lock:
            pending, self._queued = self._queued, []
        return self._deliver_sync(pending)

    def inbound(self, name: str, from_number: str | None, text: str, message_id: str | None = None, *,
                push_name: str | None = None, lid: str | None = None, addressing: str = "pn") -> str:
        """A contact writes to the instance: messages.upsert (fromMe false). Returns the message id.

        ``lid`` gives the contact's LID (``<digits>@lid``). With ``addressing="lid"`` the message is LID-addressed:
        2.3.7 replaces ``key.remoteJid`` by ``key.remoteJidAlt`` (the phone) when Baileys gives one, so with a
        phone both read as the phone, and without one the key carries only the LID (field notes §5). With
        ``addressing="pn"`` and a LID, ``remoteJidAlt`` is the LID."""
        message_id, pending = self._do_inbound(name, from_number, text, message_id, push_name, lid, addressing)
        self._deliver_sync(pending)
        return message_id

    def ack(self, name: str, key_id: str, status: str, *, remote_jid: str | None = None) -> list[dict[str, Any]]:
        """Receipt for a sent message: messages.update ``{keyId, remoteJid, fromMe, status, instanceId, messageId}``
        — exactly those fields, an ERROR included (2.3.7 forwards no error code, field notes §1). Evolution drops an
        update for a message not in its database, so an unknown ``key_id`` needs ``remote_jid``."""
        return self._deliver_sync(self._do_ack(name, key_id, status, remote_jid))

    def qr(self, name: str) -> dict[str, Any]:
        """A new QR (count+1, state connecting) and its qrcode.updated webhook. Returns the connect-shaped QR."""
        with self._lock:
            pending = self._new_qr(self._get(name))
            qr = self._get(name).qr_object()
        self._deliver_sync(pending)
        return qr

    def connecting_flood(self, name: str, n: int) -> list[dict[str, Any]]:
        """``n`` of the ``connection.update`` ``connecting`` events an instance that cannot reach WhatsApp sends
        about twice a second, forever, while connectionState says ``close`` (field notes §8)."""
        with self._lock:
            inst = self._get(name)
            pending = [p for _ in range(int(n)) for p in self._emit(
                inst, "connection.update", {"instance": inst.name, "state": "connecting", "statusReason": 200})]
        return self._deliver_sync(pending)

    # ------------------------------------------------------------------------------------- state changes

    def _get(self, name: str) -> FakeInstance:
        inst = self._instances.get(name)
        if inst is None:
            raise Unknown(name)
        return inst

    def _do_link(self, name: str, number: str) -> list[Pending]:
        with self._lock:
            inst = self._get(name)
            pending = self._set_connecting(inst)
            inst.owner_jid = jid(number)
            inst.profile_name = inst.profile_name or f"Chip {name}"
            pending += self._set_open(inst)
            return pending

    def _set_connecting(self, inst: FakeInstance) -> list[Pending]:
        inst.state = "connecting"
        inst.touch()
        return self._emit(inst, "connection.update",
                          {"instance": inst.name, "state": "connecting", "statusReason": 200})

    def _set_open(self, inst: FakeInstance) -> list[Pending]:
        inst.state = inst.db_status = "open"
        inst.ever_open = True
        inst.socket_dead = False
        inst.qr = None
        inst.qr_count = 0
        inst.touch()
        return self._emit(inst, "connection.update", {
            "instance": inst.name, "wuid": inst.owner_jid, "profileName": inst.profile_name,
            "profilePictureUrl": None, "state": "open", "statusReason": 200,
        })

    def _final_close(self, inst: FakeInstance, code: int) -> list[Pending]:
        inst.state = inst.db_status = "close"
        inst.qr = None
        inst.socket_dead = False
        at = inst.disconnection(code)
        inst.touch()
        pending = self._emit(inst, "status.instance", {
            "instance": inst.name, "status": "closed", "disconnectionAt": at, "disconnectionReasonCode": code,
            "disconnectionObject": inst.disconnection_object,
        })
        pending += self._emit(inst, "logout.instance", None)
        pending += self._emit(inst, "connection.update", {"instance": inst.name, "state": "close",
                                                          "statusReason": code})
        return pending

    def _do_close(self, name: str, code: int) -> list[Pending]:
        with self._lock:
            inst = self._get(name)
            if code in FINAL_CLOSE_CODES:
                return self._final_close(inst, code)
            return self._set_connecting(inst) + self._set_open(inst)

    def _do_inbound(self, name: str, from_number: str | None, text: str, message_id: str | None,
                    push_name: str | None, lid: str | None, addressing: str) -> tuple[str, list[Pending]]:
        if not from_number and not lid:
            raise ValueError("an inbound message needs a phone number or a LID")
        with self._lock:
            inst = self._get(name)
            message_id = message_id or phone_message_id()
            phone_jid = jid(from_number) if from_number else None
            lid_jid = (lid if "@" in lid else f"{lid}@lid") if lid else None
            if addressing == "lid":
                # 2.3.7: key.remoteJid @lid is replaced by key.remoteJidAlt (the phone) when there is one.
                key = {"remoteJid": phone_jid or lid_jid, "fromMe": False, "id": message_id}
                if phone_jid:
                    key["remoteJidAlt"] = phone_jid
            else:
                key = {"remoteJid": phone_jid, "fromMe": False, "id": message_id}
                if lid_jid:
                    key["remoteJidAlt"] = lid_jid
            if phone_jid:
                inst.talked_to.add(phone_jid.split("@", 1)[0])
            inst.message_count += 1
            data = {
                "key": key,
                "pushName": push_name or "Contato",
                "status": "DELIVERY_ACK",
                "message": {"conversation": text, "messageContextInfo": {}},
                "messageType": "conversation",
                "messageTimestamp": int(time.time()),
                "instanceId": inst.id,
                "source": "ios",
            }
            return message_id, self._emit(inst, "messages.upsert", data)

    def _ack_pending(self, inst: FakeInstance, key_id: str, status: str, remote_jid: str | None) -> list[Pending]:
        sent = self._sent_by_id.get(key_id)
        if sent is None and remote_jid is None:
            raise Unknown(f"key id {key_id!r} was never sent by {inst.name!r}; pass remote_jid=")
        # 2.3.7's messages.update: these keys and no others (participant/pollUpdates are undefined for a 1:1
        # text and vanish from the JSON; there is never an errorCode, errorMessage or messageStubParameters).
        return self._emit(inst, "messages.update", {
            "keyId": key_id,
            "remoteJid": sent["remote_jid"] if sent else jid(remote_jid or ""),
            "fromMe": True,
            "status": status,
            "instanceId": inst.id,
            "messageId": sent["message_id"] if sent else None,
        })

    def _do_ack(self, name: str, key_id: str, status: str, remote_jid: str | None) -> list[Pending]:
        with self._lock:
            return self._ack_pending(self._get(name), key_id, status, remote_jid)

    def _rotate_if_expired(self, inst: FakeInstance) -> list[Pending]:
        """Baileys rotates a linking socket's QR every 45 s; the fake does it lazily, when the QR is looked at:
        the codes that came and went unseen still count toward the limit."""
        if inst.state != "connecting" or inst.qr is None:
            return []
        periods = int((self.clock() - inst.qr_at) // QR_TTL_SECONDS)
        if periods <= 0:
            return []
        inst.qr_count += periods - 1
        return self._new_qr(inst)

    def _new_qr(self, inst: FakeInstance, *, at: float | None = None) -> list[Pending]:
        if inst.qr_count >= QRCODE_LIMIT:
            # The limit: a notice, `refused` (statusReason 428), the socket closed and the count reset (§3.5.2).
            inst.qr, inst.qr_count = None, 0
            inst.state = "close"
            inst.touch()
            pending = self._emit(inst, "qrcode.updated",
                                 {"message": "QR code limit reached, please login again", "statusCode": 500})
            return pending + self._emit(inst, "connection.update",
                                        {"instance": inst.name, "state": "refused", "statusReason": 428})
        inst.qr_count += 1
        code = qr_code_string()
        inst.qr = {"pairingCode": pairing_code() if inst.pairing_number else None, "code": code,
                   "base64": qr_png_data_url(code)}
        inst.qr_at = self.clock() if at is None else at
        inst.state = inst.db_status = "connecting"
        inst.touch()
        return self._emit(inst, "qrcode.updated", {"qrcode": {"instance": inst.name, **inst.qr}})
