"""All settings in one place: where data lives and the knobs of each stage.

Paths follow XDG unless ``MEMO_HOME`` says otherwise, so a service and a person can point at the
same appliance without flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from appliance.actor import current_actor

__all__ = ["ChunkingParams", "IngestParams", "KdfParams", "PinnedPolicies", "ReflectParams", "Settings", "TrainParams",
           "current_actor", "default_home"]


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
    """How much the generator is asked per fact; sized so a 2-core box reflects a wiki in minutes.

    Every fact gets the structural template wordings plus ``generated_wordings`` questions the
    generator samples at ``question_temperature``; one paraphrase at ``paraphrase_temperature``
    (another prompt and seed) is held out as its probe.

    ``generated_wordings`` is 0 by default: a question that asks for another value than the one it
    is paired with teaches the memory a wrong association, and most of the bundled 135M generator's
    sampled questions do (of 45 drawn from the dev-bench vault's 170 and judged by hand, 9 asked for
    their answer, 2 arguably; "What is the service interval?" → the vendor's name). The templates
    ask for the value by construction. Raise it for a generator that asks well.
    """

    facts_per_unit: int = 24
    generated_wordings: int = 0
    composed_generated_wordings: int = 0
    question_temperature: float = 0.7
    paraphrase_temperature: float = 0.9
    probe_attempts: int = 3
    question_max_tokens: int = 40
    compositions_per_fact: int = 6
    compositions_per_entity: int = 24
    max_compositions: int = 600
    negatives_per_entity: int = 2  # unanswerable questions per entity ("unknown"): see reflect/negatives.py
    negatives_ratio: float = 0.3  # at most this share of the facts' count (0.2 cut a fifth of them once names met only in prose were asked too)
    seed: int = 1125


@dataclass(frozen=True)
class TrainParams:
    """Memory training. Exposures per fact are what make a small model remember: several wordings
    per fact (reflections) times the epochs here. Training stops on held-out recall (probes): after
    ``min_epochs`` and ``min_exposures`` per fact, when an epoch reaches ``target_recall`` or ``patience`` epochs gain less than
    ``min_gain`` once training recall has reached ``memorised_recall`` (at any epoch); ``epochs`` is the ceiling;
    then ``anneal_epochs`` of decay. LoRA on every projection at a high rank, or full fine-tuning
    (``method``, ``full_learning_rate``)."""

    method: str = "lora"  # lora | full
    rank: int = 64
    alpha: int = 64
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    learning_rate: float = 1e-3
    full_learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_schedule: str = "constant"  # constant | linear (decays to lr_floor × the rate at the ``epochs`` ceiling)
    lr_floor: float = 0.1
    # warm-up, stable, decay: once the stop rule ends a constant-rate run, the best epoch's weights
    # train this many more epochs at a rate falling linearly to 0, and are kept unless the probes say
    # they got worse (0: off). A constant rate leaves the weights wandering between epochs; the decay
    # settles them, without knowing the run's length in advance, which a run that stops on probes does not
    anneal_epochs: float = 1.0
    epochs: int = 12
    min_epochs: int = 3
    # the held-out probes are first asked (and may stop training) only once every fact was shown this
    # often on average (wordings × epochs): before that a one-probe dip on ~150 probes is noise, not a
    # memory that has stopped learning (the f1259ce dev bench stopped at 13 exposures per fact on one).
    # Dev benches: memory alone on single facts 66.7 % at 13 exposures, 63.6 and 75.8 % at 18-19, 72.7 at 24 — one
    # question is 3 points, so the floor buys reproducible length, not a known gain; the literature
    # puts reliable storage nearer 100 exposures
    min_exposures: float = 16.0
    target_recall: float = 0.97
    # 1: the decay phase starts from the best epoch's weights, so an epoch past the first that gained
    # nothing only costs time: in the five runs since the decay (four demos, one dev bench) the best epoch
    # was the one before the first flat or falling epoch, and a second flat epoch never beat it
    patience: int = 1
    min_gain: float = 0.01
    # a flat held-out epoch counts as a plateau only once the memory has recalled (at any epoch) this share of its own
    # training questions: before that it is still learning what it was shown, and a probe or two up
    # or down is noise (the 9237df9 dev bench stopped at epoch 4 on one probe less, training recall 88 %)
    memorised_recall: float = 0.9
    eval_probes: int = 160  # held-out probes asked after each epoch (a sample when there are more)
    eval_training: int = 48  # training questions asked beside them (training recall)
    batch_size: int = 16
    autocast: str = "auto"  # auto: bfloat16 matrix products where the CPU/GPU has them; off: float32
    max_seconds: float = 0.0  # a wall-time budget for the run (0: none); it then stops at the first step past it
    max_length: int = 128
    seed: int = 1125
    checkpoint_every: int = 50
    # CPU threads; 0: as many cores as are free, re-checked every ``thread_check_every`` steps (a busy
    # core slows torch ~20x). Float sums depend on the thread count: a fixed number makes a resumed run
    # match a straight one exactly.
    threads: int = 0
    thread_check_every: int = 10


@dataclass(frozen=True)
class PinnedPolicies:
    """The policy set an administrator pinned in the vault: each file's name and bytes, and the
    folder they were pinned from (where an administrator edits them before pinning again)."""

    origin: Path
    files: tuple[tuple[str, bytes], ...]
    problem: str | None = None  # the vault's catalog could not be read: no policy is in force until it can


@dataclass(frozen=True)
class Settings:
    home: Path
    kdf: KdfParams = field(default_factory=KdfParams)
    chunking: ChunkingParams = field(default_factory=ChunkingParams)
    ingest: IngestParams = field(default_factory=IngestParams)
    reflect: ReflectParams = field(default_factory=ReflectParams)
    train: TrainParams = field(default_factory=TrainParams)
    pinned_policies: PinnedPolicies | None = None  # set by the vault that holds them: then they are in force

    @classmethod
    def load(cls, home: Path | str | None = None) -> "Settings":
        return cls(home=Path(home).expanduser() if home else default_home())

    def with_home(self, home: Path) -> "Settings":
        return replace(self, home=home)

    @property
    def models_dir(self) -> Path:
        """Where an administrator places extra models (``*.gguf`` files, Hugging Face folders)."""
        return self.home / "models"

    def with_pinned_policies(self, pinned: PinnedPolicies | None) -> "Settings":
        return replace(self, pinned_policies=pinned)

    @property
    def policies_dir(self) -> Path:
        """The installed policy folder: ``MEMO_POLICIES``, else the source tree's ``policies/``, else
        ``<home>/policies``. It is what ``memo init`` and ``memo policy pin`` read; once a vault holds
        a pinned set (``pinned_policies``), that set is in force and this folder changes nothing.
        """
        env = os.environ.get("MEMO_POLICIES")
        if env:
            return Path(env).expanduser()
        source_tree = Path(__file__).resolve().parent.parent
        if (source_tree / "pyproject.toml").is_file() and (source_tree / "policies").is_dir():
            return source_tree / "policies"
        return self.home / "policies"
