"""A synthetic company wiki of any size, shaped like the bundled sample corpus: team pages (lead,
site, budget code, a table of members), system pages (owner team, on-call number, host), site
pages (address, code, cold rooms) and policies, some of which supersede an earlier edition.
Names are made of syllables, so every entity is unique and titles differ as real ones do;
systems name their owner team, so facts join across documents (multi-hop). Deterministic.

    from bench.wiki_corpus import write_wiki
    write_wiki(Path("corpus"), 1000)
"""

from __future__ import annotations

import random
from pathlib import Path

_SYL = "ka ro mi ten vas lor quin bel dra fen gor hal is jun kel mar nor ost pel rhu sil tor ul ven wen yar zel".split()
_FIRST = "Ottilie Marek Isaura Bjarni Cosima Fenna Runa Leopold Dawit Linnea Tobiah Henrike Ansel Brit Caius Dagny".split()
_TOPICS = ("travel and expenses", "leave", "password", "cold room access", "vehicle use", "overtime", "badge",
           "visitor", "data retention", "remote work", "procurement", "incident reporting")


def _name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {_name(rng, 3)}"


def _team_page(i: int, team: str, site: str, rng: random.Random) -> tuple[str, str]:
    rows = "\n".join(f"| {_person(rng)} | {rng.choice(['engineer', 'planner', 'analyst', 'driver', 'coordinator'])} |"
                     for _ in range(rng.randint(2, 5)))
    return f"teams/{team.lower()}-{i}.md", (
        f"# {team} team\n\n- Lead: {_person(rng)}\n- Based at: {site}\n- Budget code: BC-{rng.randint(1000, 9999)}\n"
        f"- Headcount: {rng.randint(4, 40)}\n\nThe {team} team meets every {rng.choice(['Monday', 'Tuesday', 'Thursday'])} "
        f"at {rng.randint(8, 16)}:00.\n\n| Member | Role |\n|---|---|\n{rows}\n")


def _system_page(i: int, system: str, team: str, rng: random.Random) -> tuple[str, str]:
    return f"systems/{system.lower()}-{i}.md", (
        f"# {system} system\n\n{system} is owned by the {team} team.\n\n- Host: {system.lower()}{rng.randint(1, 9)}.internal\n"
        f"- On-call number: 0800-{rng.randint(1000, 9999)}\n- Backups run at {rng.randint(0, 5)}:30 every night.\n"
        f"- Licence renewal: {rng.randint(1, 28)} {rng.choice(['March', 'June', 'October'])} {rng.choice([2025, 2026])}.\n")


def _site_page(i: int, site: str, rng: random.Random) -> tuple[str, str]:
    rooms = "\n".join(f"| CR-{rng.randint(1, 99)} | {rng.randint(2, 8)} °C |" for _ in range(rng.randint(1, 4)))
    return f"sites/{site.lower().replace(' ', '-')}-{i}.md", (
        f"# {site} site\n\n- Site code: {site[:3].upper()}-{rng.randint(10, 99)}\n- Address: {rng.randint(1, 200)} "
        f"{_name(rng)} Road\n- Site manager: {_person(rng)}\n\n| Cold room | Set point |\n|---|---|\n{rooms}\n")


def _policy_pages(i: int, topic: str, rng: random.Random) -> list[tuple[str, str]]:
    limit, days = rng.randint(50, 900), rng.randint(10, 40)
    old = (f"policies/{topic.replace(' ', '-')}-{i}-2024.md",
           f"# {topic.capitalize()} policy {i} (2024)\n\n- Approval limit: {limit} EUR\n- Notice period: {days} days\n"
           f"- Owner: {_person(rng)}\n")
    if rng.random() < 0.5:
        return [old]
    new = (f"policies/{topic.replace(' ', '-')}-{i}-2025.md",
           f"# {topic.capitalize()} policy {i} (2025)\n\nThis policy supersedes the {topic} policy {i} (2024).\n\n"
           f"- Approval limit: {limit + rng.randint(10, 200)} EUR\n- Notice period: {days + rng.randint(1, 10)} days\n"
           f"- Owner: {_person(rng)}\n")
    return [old, new]


def write_wiki(root: Path, n: int, seed: int = 16) -> int:
    """Write ``n`` documents under ``root``; returns their total size in bytes."""
    rng = random.Random(seed)
    teams: list[str] = []
    sites: list[str] = []
    pages: list[tuple[str, str]] = []
    i = 0
    while len(pages) < n:
        kind = i % 4
        if kind == 0 or not teams:
            sites.append(f"{_name(rng)} {rng.choice(['Yard', 'Point', 'Park', 'Quay'])}") if len(sites) < 1 + i // 10 else None
            team = f"{_name(rng)} {rng.choice(['Dispatch', 'Engineering', 'Ops', 'Services', 'Safety'])}"
            teams.append(team)
            pages.append(_team_page(i, team, rng.choice(sites) if sites else "Kestrel Yard", rng))
        elif kind == 1:
            pages.append(_system_page(i, _name(rng, 3), rng.choice(teams), rng))
        elif kind == 2 and sites:
            pages.append(_site_page(i, rng.choice(sites), rng))
        else:
            pages.extend(_policy_pages(i, rng.choice(_TOPICS), rng))
        i += 1
    total = 0
    for rel, text in pages[:n]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        total += len(text.encode())
    return total
