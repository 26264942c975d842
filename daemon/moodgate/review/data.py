"""The review page's reads and writes against the decision database (blocking; the web
handlers call these in a thread so the proxy's event loop never waits on SQLite)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from moodgate.record.store import TABLE, add_label, decision_by_id, open_database, read_labels

ACTIONS = ("pass", "calm", "block")
LABELS = {
    "fine": "fine for this child",
    "calm": "should have been calmed",
    "block": "should have been blocked",
}


@dataclass(frozen=True)
class Counts:
    today: dict[str, int]
    week: dict[str, int]


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def local_midnight(now: datetime, zone: tzinfo, days_back: int = 0) -> datetime:
    local = now.astimezone(zone)
    day = local.date() - timedelta(days=days_back)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


class ReviewData:
    """Queries by child; every method opens and closes its own connection."""

    def __init__(self, database: Path) -> None:
        self.database = database

    def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        if not self.database.exists():
            return []
        db = open_database(self.database)
        try:
            cursor = db.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            db.conn.close()

    def children_seen(self) -> list[str]:
        rows = self._query(f"SELECT DISTINCT child FROM {TABLE} ORDER BY child", [])
        return [str(r["child"]) for r in rows]

    def _counts_since(self, child: str, since: datetime) -> dict[str, int]:
        rows = self._query(
            f"SELECT action, count(*) AS n FROM {TABLE} WHERE child = ? AND time >= ? "
            "GROUP BY action", [child, _iso(since)],
        )  # fmt: skip
        found = {str(r["action"]): int(r["n"]) for r in rows}
        return {action: found.get(action, 0) for action in ACTIONS}

    def counts(self, child: str, zone: tzinfo, now: datetime | None = None) -> Counts:
        now = now or datetime.now(UTC)
        today = local_midnight(now, zone)
        monday = local_midnight(now, zone, now.astimezone(zone).weekday())
        return Counts(self._counts_since(child, today), self._counts_since(child, monday))

    def timeline(
        self, child: str, zone: tzinfo, days: int = 14, now: datetime | None = None
    ) -> list[tuple[date, dict[str, int]]]:
        """Decisions per local day and action, oldest day first."""
        now = now or datetime.now(UTC)
        start = local_midnight(now, zone, days - 1)
        rows = self._query(
            f"SELECT time, action FROM {TABLE} WHERE child = ? AND time >= ?",
            [child, _iso(start)],
        )
        per_day: dict[date, Counter[str]] = {}
        for row in rows:
            day = datetime.fromisoformat(str(row["time"])).astimezone(zone).date()
            per_day.setdefault(day, Counter())[str(row["action"])] += 1
        first = start.date()
        return [
            (first + timedelta(d), {a: per_day.get(first + timedelta(d), Counter())[a]
                                     for a in ACTIONS})
            for d in range(days)
        ]  # fmt: skip

    def points(self, child: str, limit: int = 400) -> list[dict[str, Any]]:
        """Recent scored items for the circumplex."""
        return self._query(
            f"SELECT valence, arousal, action FROM {TABLE} WHERE child = ? "
            "AND valence IS NOT NULL AND arousal IS NOT NULL ORDER BY id DESC LIMIT ?",
            [child, limit],
        )

    def feed(self, child: str, everything: bool = False, limit: int = 60) -> list[dict[str, Any]]:
        only = "" if everything else "AND action IN ('calm', 'block') "
        return self._query(
            f"SELECT * FROM {TABLE} WHERE child = ? {only}ORDER BY id DESC LIMIT ?",
            [child, limit],
        )

    def decision(self, decision_id: int) -> dict[str, Any] | None:
        return decision_by_id(self.database, decision_id)

    def latest_labels(self, child: str) -> dict[int, dict[str, Any]]:
        """decision id → its newest label and newest rating, merged."""
        merged: dict[int, dict[str, Any]] = {}
        for label in read_labels(self.database, child):
            entry = merged.setdefault(int(label["decision_id"]), {})
            if label.get("label"):
                entry["label"] = label["label"]
            if label.get("rating_valence") is not None:
                entry["rating"] = (label["rating_valence"], label["rating_arousal"])
        return merged

    def add_label(
        self,
        decision: dict[str, Any],
        label: str | None,
        rating: tuple[float, float] | None = None,
    ) -> int:
        if label is not None and label not in LABELS:
            raise ValueError(f"unknown label {label!r}")
        if label is None and rating is None:
            raise ValueError("nothing to store: give a label or a rating")
        return add_label(
            self.database,
            {
                "child": decision["child"], "decision_id": decision["id"],
                "decision_uid": decision.get("uid"), "decision_time": decision["time"],
                "label": label,
                "rating_valence": rating[0] if rating else None,
                "rating_arousal": rating[1] if rating else None,
                "valence": decision["valence"], "arousal": decision["arousal"],
                "explicit": decision["explicit"], "action": decision["action"],
                "rule": decision["rule"], "host": decision["host"],
                "window": decision["window"],
            },
        )  # fmt: skip

    def ratings(self) -> list[dict[str, Any]]:
        """Every decision's newest VA rating, for export."""
        newest: dict[Any, dict[str, Any]] = {}
        for label in read_labels(self.database):
            if label.get("rating_valence") is not None:
                newest[label.get("decision_uid") or label["decision_id"]] = label
        return list(newest.values())
