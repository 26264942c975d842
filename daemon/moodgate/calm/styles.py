"""The style bank: example images summarised as an emotion (scored) plus colour statistics.

Only numbers are kept, never pixels: a bank is a small JSON file that can ship with the
package (models/styles.json) or live in the user's state directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from moodgate.calm.colour import ColourStats, measure
from moodgate.emotion.base import Emotion, Scorer, score
from moodgate.media.errors import MediaError
from moodgate.media.image import frames_for_scoring

BANK_VERSION = 1
STYLE_SIZE = 256  # statistics are computed on thumbnails no larger than this


def default_bank_path() -> Path:
    """models/styles.json of a source checkout, where the shipped default bank lives."""
    return Path(__file__).resolve().parents[3] / "models" / "styles.json"


def user_bank_path() -> Path:
    """`$MOODGATE_STATE_DIR/styles.json`, else `~/.local/state/moodgate/styles.json`."""
    state = os.environ.get("MOODGATE_STATE_DIR")
    root = Path(state) if state else Path.home() / ".local" / "state" / "moodgate"
    return root / "styles.json"


@dataclass(frozen=True)
class Style:
    """One example of the look a calmed image should move toward."""

    name: str
    emotion: Emotion  # as predicted by the scorer that built the bank
    stats: ColourStats
    source: str = ""  # where it came from (a path, or "oasis:<Theme>"); informative only
    rated: Emotion | None = None  # human ratings, when the style came from a rated dataset

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "name": self.name,
            "valence": round(self.emotion.valence, 4),
            "arousal": round(self.emotion.arousal, 4),
            "source": self.source,
            **self.stats.to_json(),
        }
        if self.rated is not None:
            data["rated_valence"] = round(self.rated.valence, 4)
            data["rated_arousal"] = round(self.rated.arousal, 4)
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Style:
        rated = None
        if "rated_valence" in data and "rated_arousal" in data:
            rated = Emotion(float(data["rated_valence"]), float(data["rated_arousal"]))  # type: ignore[arg-type]
        return cls(
            name=str(data["name"]),
            emotion=Emotion(float(data["valence"]), float(data["arousal"])),  # type: ignore[arg-type]
            stats=ColourStats.from_json(data),
            source=str(data.get("source", "")),
            rated=rated,
        )


# Used when no bank ships: a soft, bright, slightly cool low-chroma look. Valdez & Mehrabian
# (1994) find blue-green hues and high brightness with low saturation the least arousing and
# most pleasant; the numbers are of the order the OASIS calm images give (see docs/calming.md).
NEUTRAL_CALM = Style(
    name="builtin:neutral-calm",
    emotion=Emotion(valence=0.5, arousal=-0.6),
    stats=ColourStats.from_arrays(
        mean=np.array([62.0, -3.0, 3.0]),
        cov=np.diag([22.0**2, 7.0**2, 10.0**2]),
        contrast=0.18,
        saturation_mean=0.22,
        saturation_std=0.14,
    ),
    source="builtin",
)


def thumbnail(frame: Image.Image, size: int = STYLE_SIZE) -> Image.Image:
    """A copy no larger than size×size; reduce() first because it is far cheaper than resize."""
    factor = max(1, min(frame.size) // (2 * size))
    small = frame.reduce(factor) if factor > 1 else frame
    if max(small.size) > size:
        small = small.copy()
        small.thumbnail((size, size), Image.Resampling.BILINEAR)
    return small


def summarise_bytes(data: bytes, scorer: Scorer) -> tuple[Emotion, ColourStats]:
    """Score and summarise one encoded image (animations: a few sampled frames)."""
    _, arrays = frames_for_scoring(data, size=STYLE_SIZE)
    thumbs = [np.asarray(thumbnail(Image.fromarray(a))) for a in arrays]
    return score(scorer, thumbs), measure(thumbs)


@dataclass
class StyleBank:
    """An ordered collection of styles; JSON on disk."""

    styles: list[Style] = field(default_factory=list)
    scorer: str = ""  # name of the scorer that predicted the styles' emotions

    def __len__(self) -> int:
        return len(self.styles)

    def extend(self, styles: Iterable[Style]) -> None:
        """Add styles, replacing any with the same name (re-adding a folder updates it)."""
        incoming = list(styles)
        names = {s.name for s in incoming}
        self.styles = [s for s in self.styles if s.name not in names] + incoming

    @classmethod
    def load(cls, path: Path) -> StyleBank:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("styles"), list):
            raise ValueError(f"{path}: not a style bank (expected an object with 'styles')")
        if int(data.get("version", BANK_VERSION)) > BANK_VERSION:
            raise ValueError(f"{path}: style bank version {data['version']} is too new")
        styles = []
        for index, item in enumerate(data["styles"]):
            try:
                styles.append(Style.from_json(item))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: style #{index} is malformed: {exc}") from exc
        return cls(styles=styles, scorer=str(data.get("scorer", "")))

    @classmethod
    def default(cls, path: Path | None = None) -> StyleBank:
        """The shipped bank (models/styles.json); the built-in neutral style if it is missing."""
        path = path or default_bank_path()
        try:
            bank = cls.load(path)
        except (OSError, ValueError):
            return cls(styles=[NEUTRAL_CALM], scorer="builtin")
        return bank if bank.styles else cls(styles=[NEUTRAL_CALM], scorer="builtin")

    @classmethod
    def load_or_empty(cls, path: Path) -> StyleBank:
        return cls.load(path) if Path(path).exists() else cls()

    def save(self, path: Path, extra: dict[str, object] | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, object] = {"version": BANK_VERSION, "scorer": self.scorer}
        data.update(extra or {})
        data["styles"] = [s.to_json() for s in self.styles]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)  # atomic: a crash never leaves half a bank behind

    def add_files(
        self, files: Sequence[Path], scorer: Scorer, prefix: str = ""
    ) -> tuple[list[Style], list[str]]:
        """Score and summarise each file; bad files become problem lines, the rest are added."""
        added: list[Style] = []
        problems: list[str] = []
        for file in files:
            try:
                emotion, stats = summarise_bytes(file.read_bytes(), scorer)
            except (OSError, MediaError) as exc:
                problems.append(f"{file}: {exc}")
                continue
            added.append(Style(f"{prefix}{file.stem}", emotion, stats, source=str(file)))
        self.extend(added)
        if added and not self.scorer:
            self.scorer = scorer.name
        return added, problems

    def add_dir(self, directory: Path, scorer: Scorer) -> tuple[list[Style], list[str]]:
        """Every regular, non-hidden file directly in `directory` (sorted, so runs repeat)."""
        directory = Path(directory)
        if not directory.is_dir():
            return [], [f"{directory}: not a directory"]
        files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            return [], [f"{directory}: no files"]
        return self.add_files(files, scorer, prefix=f"{directory.name}/")
