"""The server's sessions, grouped by the source address that opened them.

When the cache is full, the least recently used session *of the source holding the most* goes,
not the oldest overall: one address opening sessions back to back then only pushes out its own,
and to evict a peer's last session an attacker needs as many addresses as the cache has
slots. On one address (a test mesh) this is plain LRU. Sources are also kept by how many
sessions they hold (each add or pop moves one source by one), so the largest is found without
a scan of the sources.
"""

from __future__ import annotations

from collections import OrderedDict

from mesh.channel.session import Session


class SessionCache:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[bytes, tuple[Session, str]] = {}
        self._by_source: dict[str, OrderedDict[bytes, None]] = {}   # least recently used first
        self._by_count: dict[int, set[str]] = {}     # sources by how many sessions they hold
        self._most = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def sessions_of(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    def add(self, session: Session, source: str) -> None:
        self.pop(session.session_id)
        self._sessions[session.session_id] = (session, source)
        mine = self._by_source.setdefault(source, OrderedDict())
        mine[session.session_id] = None
        self._recount(source, len(mine) - 1, len(mine))
        while len(self._sessions) > self.max_sessions:
            # never the session just added: on a tie, another source's
            largest = next((s for s in self._by_count[self._most] if s != source), source)
            self.evicted += 1
            self.pop(next(iter(self._by_source[largest])))

    def get(self, session_id: bytes) -> Session | None:
        entry = self._sessions.get(session_id)
        return None if entry is None else entry[0]

    def touch(self, session_id: bytes) -> None:
        """The session was used: it is its source's most recent."""
        entry = self._sessions.get(session_id)
        if entry is not None:
            self._by_source[entry[1]].move_to_end(session_id)

    def pop(self, session_id: bytes) -> None:
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return
        mine = self._by_source[entry[1]]
        del mine[session_id]
        self._recount(entry[1], len(mine) + 1, len(mine))
        if not mine:
            del self._by_source[entry[1]]

    def clear(self) -> None:
        self._sessions.clear()
        self._by_source.clear()
        self._by_count.clear()
        self._most = 0

    def _recount(self, source: str, old: int, new: int) -> None:
        if old:
            sources = self._by_count[old]
            sources.discard(source)
            if not sources:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, set()).add(source)
        if new > self._most:
            self._most = new
        elif old == self._most and old not in self._by_count:
            self._most = new      # the one source at the top came down by one
