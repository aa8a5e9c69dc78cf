"""All settings in one place: where data lives and the knobs of each stage.

Paths follow XDG unless ``MEMO_HOME`` says otherwise, so a service and a person can point at the
same appliance without flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("MEMO_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "memo"


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. The defaults follow RFC 9106's second recommended option (64 MiB)."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4


@dataclass(frozen=True)
class ChunkingParams:
    """Chunks are sized for a small generator model: a few paragraphs each."""

    target_words: int = 180
    overlap_words: int = 30


@dataclass(frozen=True)
class IngestParams:
    max_file_bytes: int = 64 * 1024 * 1024
    near_duplicate_threshold: float = 0.5  # 3-word shingles: a reworded copy scores ~0.7, related pages < 0.25
    minhash_permutations: int = 128
    shingle_words: int = 3
    batch_documents: int = 32
    batch_seconds: float = 2.0


@dataclass(frozen=True)
class ReflectParams:
    """How much the generator is asked per fact; sized so a 2-core box reflects a wiki in minutes."""

    spans_per_fact: int = 2
    paraphrases: bool = True
    entity_facts: int = 3
    relations_per_entity: int = 2
    max_relation_units: int = 150
    question_max_tokens: int = 40
    paraphrase_temperature: float = 0.8
    seed: int = 1125


@dataclass(frozen=True)
class TrainParams:
    """Memory training. LoRA on every projection (the paper's variant: r=16, alpha=32); a small
    corpus needs more epochs and a higher rate than the paper's large one to be memorised."""

    method: str = "lora"  # lora | full
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    learning_rate: float = 1e-3
    full_learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    epochs: int = 8
    batch_size: int = 8
    max_length: int = 192
    seed: int = 1125
    checkpoint_every: int = 20
    # CPU threads; 0: as many cores as are free when training starts (a busy core slows torch ~20x).
    # Float sums depend on the thread count: a fixed number makes a resumed run match a straight one exactly.
    threads: int = 0


@dataclass(frozen=True)
class Settings:
    home: Path
    kdf: KdfParams = field(default_factory=KdfParams)
    chunking: ChunkingParams = field(default_factory=ChunkingParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    reflect: ReflectParams = field(default_factory=ReflectParams)
    train: TrainParams = field(default_factory=TrainParams)

    @classmethod
    def load(cls, home: Path | str | None = None) -> "Settings":
        return cls(home=Path(home).expanduser() if home else default_home())

    def with_home(self, home: Path) -> "Settings":
        return replace(self, home=home)

    @property
    def models_dir(self) -> Path:
        """Where an administrator places extra models (``*.gguf`` files, Hugging Face folders)."""
        return self.home / "models"

    @property
    def policies_dir(self) -> Path:
        """Policy files: ``MEMO_POLICIES``, else the source tree's ``policies/``, else ``<home>/policies``.

        Read at each access so a service and the console agree without restarting either.
        """
        env = os.environ.get("MEMO_POLICIES")
        if env:
            return Path(env).expanduser()
        source_tree = Path(__file__).resolve().parent.parent
        if (source_tree / "pyproject.toml").is_file() and (source_tree / "policies").is_dir():
            return source_tree / "policies"
        return self.home / "policies"


def current_actor() -> str:
    """Who is acting: ``MEMO_ACTOR`` (set by services and the console) or the OS user."""
    actor = os.environ.get("MEMO_ACTOR")
    if actor:
        return actor
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid:{os.getuid()}"
