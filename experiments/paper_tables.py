"""The DOM2 paper's result tables (Tables 1-4), for putting our runs next to them.

``experiments.report`` uses these to write its "Next to the paper" section. Values are the
paper's mean ± std of the episode return (raw score, not normalised), transcribed from
``../shared/papers/dom2_paper.txt``; ``tests/test_paper_tables.py`` re-parses that text and
checks every number here. The paper reports MA-CQL, OMAR, MA-SfBC and DOM2 only (no BC, no
MA-TD3+BC). Its MPE datasets and evaluation differ from ours in ways BUILD_NOTES.md records
(e.g. its spread scores exceed the public expert data's 531), so a difference is a finding to
explain, not by itself a bug.

  PAPER[(env, shift)][quality][algo] -> (mean, std)
  TABLE_OF[(env, shift)] -> 1..4

shift: None (standard environment; Tables 1 and 3), "speed" (MPE agents' speed ~ U[v_min, 1];
Table 2), "R" / "E" (HalfCheetah random / extreme physics; Table 4) — the values of
``experiments.train --shift``.
"""
from typing import Dict, Optional, Tuple

ALGOS = ("macql", "omar", "masfbc", "dom2")  # the paper's column order

# (table, env, shift): {quality: ((mean, std) per algorithm in ALGOS order)}
_ROWS = {
    (1, "mpe_tag", None): {
        "random": ((1.0, 7.6), (14.3, 9.5), (3.5, 2.5), (208.7, 57.3)),
        "random-medium": ((1.7, 13.0), (67.7, 30.8), (12.0, 10.7), (133.0, 39.9)),
        "medium-replay": ((35.0, 21.6), (86.8, 43.7), (26.1, 10.0), (150.5, 23.9)),
        "medium": ((101.0, 42.5), (116.9, 45.2), (127.0, 50.9), (155.8, 48.1)),
        "medium-expert": ((113.2, 36.7), (128.3, 35.2), (152.3, 41.2), (184.4, 25.3)),
        "expert": ((140.9, 33.3), (202.8, 27.1), (256.0, 26.9), (259.1, 22.8)),
    },
    (1, "mpe_world", None): {
        "random": ((-3.8, 3.0), (0.0, 3.3), (-1.8, 1.9), (40.0, 14.3)),
        "random-medium": ((-6.6, 1.1), (28.7, 10.4), (4.0, 5.5), (42.7, 9.3)),
        "medium-replay": ((15.9, 14.2), (21.1, 15.6), (9.1, 5.9), (65.9, 10.6)),
        "medium": ((44.3, 14.1), (45.6, 16.0), (54.2, 22.7), (84.5, 23.4)),
        "medium-expert": ((51.4, 25.6), (71.5, 28.2), (60.6, 22.9), (89.4, 16.5)),
        "expert": ((57.7, 20.5), (84.8, 21.0), (97.3, 19.1), (99.5, 17.1)),
    },
    (1, "mpe_spread", None): {
        "random": ((206.0, 17.5), (211.3, 20.3), (179.8, 15.7), (337.8, 26.0)),
        "random-medium": ((226.5, 22.1), (272.6, 39.4), (178.8, 17.9), (359.7, 28.5)),
        "medium-replay": ((229.7, 55.9), (260.7, 37.7), (196.1, 11.1), (324.1, 38.6)),
        "medium": ((275.4, 29.5), (348.7, 51.7), (276.3, 8.8), (358.9, 25.2)),
        "medium-expert": ((333.3, 50.1), (450.3, 39.0), (299.8, 16.8), (532.9, 54.7)),
        "expert": ((478.9, 29.1), (564.6, 8.6), (553.0, 41.1), (628.6, 17.2)),
    },
    (2, "mpe_tag", "speed"): {
        "random": ((1.8, 5.7), (10.4, 3.6), (9.3, 15.4), (120.7, 100.2)),
        "random-medium": ((4.0, 7.4), (41.4, 20.9), (22.2, 34.8), (66.2, 88.8)),
        "medium-replay": ((35.6, 24.1), (60.0, 24.9), (11.9, 18.1), (104.2, 132.5)),
        "medium": ((80.3, 51.0), (81.1, 51.4), (83.5, 97.2), (95.7, 79.9)),
        "medium-expert": ((69.5, 44.7), (78.6, 59.2), (84.0, 86.6), (127.9, 121.8)),
        "expert": ((100.0, 37.1), (151.7, 41.3), (171.6, 133.6), (208.7, 160.9)),
    },
    (2, "mpe_world", "speed"): {
        "random": ((-2.7, 3.2), (1.1, 3.4), (-1.9, 4.6), (35.6, 23.1)),
        "random-medium": ((-6.0, 7.7), (28.7, 7.4), (0.0, 5.0), (30.3, 34.2)),
        "medium-replay": ((8.1, 6.2), (20.1, 14.5), (4.6, 9.2), (51.5, 21.3)),
        "medium": ((33.3, 11.6), (32.0, 15.1), (35.6, 15.4), (57.5, 28.2)),
        "medium-expert": ((40.9, 15.3), (44.6, 18.5), (39.3, 25.7), (79.9, 39.7)),
        "expert": ((51.1, 11.0), (71.1, 15.2), (82.0, 33.3), (91.8, 34.9)),
    },
    (2, "mpe_spread", "speed"): {
        "random": ((235.6, 19.5), (251.0, 36.8), (175.5, 38.1), (265.6, 57.3)),
        "random-medium": ((251.0, 36.8), (266.1, 23.6), (174.3, 50.0), (304.5, 45.6)),
        "medium-replay": ((224.2, 30.2), (271.3, 33.6), (191.9, 54.6), (302.1, 78.2)),
        "medium": ((256.5, 15.2), (295.6, 46.0), (285.6, 68.2), (295.2, 80.0)),
        "medium-expert": ((279.9, 21.8), (373.9, 31.8), (277.9, 57.8), (439.6, 89.8)),
        "expert": ((376.1, 25.2), (410.6, 35.6), (410.6, 83.0), (444.0, 99.0)),
    },
    (3, "mamujoco_halfcheetah_2x3", None): {
        "random": ((-0.1, 0.2), (-0.9, 0.1), (-388.9, 29.2), (799.8, 143.9)),
        "random-medium": ((-0.1, 0.1), (219.5, 369.1), (-383.1, 18.4), (875.0, 155.5)),
        "medium-replay": ((1216.6, 514.6), (1674.8, 201.5), (-128.3, 71.3), (2564.3, 216.9)),
        "medium": ((963.4, 316.6), (2797.0, 445.7), (1386.8, 248.8), (2851.2, 145.5)),
        "medium-expert": ((1989.8, 685.6), (2900.2, 403.2), (1392.3, 190.3), (2919.6, 252.8)),
        "expert": ((2722.8, 1022.6), (2963.8, 410.5), (2386.6, 440.3), (3676.6, 248.1)),
    },
    (4, "mamujoco_halfcheetah_2x3", "R"): {
        "random": ((-0.1, 0.3), (-1.0, 0.3), (-315.8, 25.7), (581.8, 621.0)),
        "random-medium": ((-0.2, 0.3), (90.8, 176.2), (-327.0, 21.0), (1245.8, 315.9)),
        "medium-replay": ((1279.6, 305.4), (1648.0, 132.6), (-171.4, 43.7), (2290.8, 128.5)),
        "medium": ((1111.7, 585.9), (2650.0, 201.5), (1367.6, 203.9), (2788.5, 112.9)),
        "medium-expert": ((1291.5, 408.3), (2616.6, 368.8), (1442.1, 218.9), (2731.7, 268.1)),
        "expert": ((2678.2, 900.9), (2295.0, 357.2), (2397.4, 670.3), (3178.7, 370.5)),
    },
    (4, "mamujoco_halfcheetah_2x3", "E"): {
        "random": ((-0.1, 0.1), (-1.0, 0.3), (-309.8, 23.0), (372.9, 449.7)),
        "random-medium": ((-0.1, 0.2), (129.8, 374.6), (-329.2, 43.6), (482.0, 468.6)),
        "medium-replay": ((1290.4, 230.8), (1549.9, 311.4), (-169.8, 50.5), (1904.2, 201.8)),
        "medium": ((1108.1, 944.0), (2197.4, 95.2), (1355.0, 195.7), (2232.4, 215.1)),
        "medium-expert": ((1127.1, 565.2), (2196.9, 186.9), (1393.7, 347.7), (2219.0, 170.7)),
        "expert": ((2117.0, 524.0), (1615.7, 707.6), (2757.2, 200.6), (2641.3, 382.9)),
    },
}

PAPER: Dict[Tuple[str, Optional[str]], Dict[str, Dict[str, Tuple[float, float]]]] = {
    (env, shift): {q: dict(zip(ALGOS, cells)) for q, cells in rows.items()}
    for (_, env, shift), rows in _ROWS.items()}
TABLE_OF: Dict[Tuple[str, Optional[str]], int] = {
    (env, shift): table for (table, env, shift) in _ROWS}


def paper_score(env: str, quality: str, algo: str,
                shift: Optional[str] = None) -> Optional[Tuple[float, float]]:
    """(mean, std) the paper reports for ``algo`` on ``env``/``quality`` (evaluated in the
    ``shift`` environment), or None where the paper has no such cell."""
    return PAPER.get((env, shift), {}).get(quality, {}).get(algo)
