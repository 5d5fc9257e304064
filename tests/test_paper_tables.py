"""experiments.paper_tables against the paper's own text (../shared/papers/dom2_paper.txt): an
independent parse of Tables 1-4 must give every transcribed number."""
import os
import re

import pytest

from experiments import paper_tables

PAPER_TXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                         "papers", "dom2_paper.txt")
ENVS = {"Predator Prey": "mpe_tag", "World": "mpe_world", "Cooperative Navigation": "mpe_spread",
        "HalfCheetah-v2": "mamujoco_halfcheetah_2x3"}
LABELS = {"MA-CQL": "macql", "OMAR": "omar", "MA-SfBC": "masfbc", "DOM2": "dom2"}


def _parse(text):
    """{(table, env, shift): {quality: {algo: (mean, std)}}} from the tab-separated tables."""
    out, table, block, algos = {}, None, None, None
    for line in text.splitlines():
        m = re.match(r"Table (\d):", line)
        if m:
            table = int(m.group(1))
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != 5 or table is None:
            continue
        name = re.sub(r"-[RE]$", "", cells[0])
        if name in ENVS:
            shift = {2: "speed", 4: cells[0][-1]}.get(table)
            block = out.setdefault((table, ENVS[name], shift), {})
            algos = [LABELS[c] for c in cells[1:]]
        elif block is not None:
            q = cells[0].lower().replace(" ", "-")
            block[q] = {a: tuple(float(x) for x in c.split("±")) for a, c in zip(algos, cells[1:])}
    return out


@pytest.mark.skipif(not os.path.exists(PAPER_TXT), reason="../shared/papers not beside the repo")
def test_transcription_matches_the_paper_text():
    parsed = _parse(open(PAPER_TXT, encoding="utf-8").read())
    assert len(parsed) == 9 and all(len(rows) == 6 for rows in parsed.values())
    ours = {(paper_tables.TABLE_OF[k], *k): v for k, v in paper_tables.PAPER.items()}
    assert ours == parsed


def test_lookup():
    assert paper_tables.paper_score("mpe_spread", "expert", "dom2") == (628.6, 17.2)
    assert paper_tables.paper_score("mamujoco_halfcheetah_2x3", "medium", "omar", "E") == (
        2197.4, 95.2)
    assert paper_tables.paper_score("mpe_spread", "expert", "bc") is None  # not in the paper
    assert paper_tables.paper_score("mpe_spread", "expert", "dom2", "R") is None
