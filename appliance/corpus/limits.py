"""What parsing one untrusted file may cost: bytes unpacked, text produced, nesting, time, memory.

A corpus comes from shares, mail and exports nobody vetted, so a reader must assume a file was
built to hurt it: a 1 MB .docx that inflates to gigabytes of XML, an HTML file nested twenty
thousand tables deep, a PDF whose parser loops. The readers check the size and shape limits
(:mod:`appliance.corpus.readers`); time and memory are enforced by the worker process each file
is parsed in (:mod:`appliance.corpus.sandbox`), which is killed and replaced when it runs over.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class ParseLimits:
    """Defaults fit the 64 MiB input limit with room: a 5,000-page Word file, a 64 MiB text file."""

    unpacked_bytes: int = 256 * MIB  # .docx: declared sizes of all zip members together
    xml_bytes: int = 32 * MIB  # .docx: declared sizes of its XML parts (what python-docx parses)
    zip_members: int = 10_000
    text_chars: int = 64 * MIB  # characters of extracted text
    depth: int = 4096  # HTML element nesting (a quadratic cost beyond it; the XML parser stops at 256)
    seconds: float = 30.0  # wall time per file ...
    seconds_per_mib: float = 2.0  # ... plus this per MiB of input
    memory_mib: int = 1024  # address space a parser may add to its worker's

    def timeout(self, size: int) -> float:
        return self.seconds + self.seconds_per_mib * size / MIB
