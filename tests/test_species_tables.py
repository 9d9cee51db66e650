"""The two species tables (world.py): the shipped "distance" table and round 30's "colour" table, selected by
MICROCLIP_TOYWORLD_SPECIES at import. The colour world runs in a subprocess, so this process keeps the shipped one."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from microclip.toyworld.text import ASSETS_DIR, DESCRIPTION_SEED, description_oracle_accuracy
from microclip.toyworld.world import PART_VALUES, PARTS, SPECIES, SPECIES_TABLE, build_species, colour_differences

ROOT = Path(__file__).resolve().parent.parent


def _codes(species) -> list[tuple[int, ...]]:
    return [tuple(PART_VALUES[p].index(getattr(s, p)) for p in PARTS) for s in species]


def _colour_world(code: str, tmp_path: Path) -> dict:
    """Run ``code`` (which prints one JSON line) in a process that draws the colour world."""
    env = {**os.environ, "MICROCLIP_TOYWORLD_SPECIES": "colour", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_colour_differences_count_only_parts_both_birds_have():
    # beak (never absent), crest, wing bands, eye ring, tail tip; index 0 of the last four is "absent".
    assert colour_differences((0, 0, 0, 0, 0), (0, 1, 2, 1, 3)) == 0  # only absences differ
    assert colour_differences((1, 0, 0, 0, 0), (0, 1, 2, 1, 3)) == 1  # the beak always counts
    assert colour_differences((0, 1, 2, 1, 3), (0, 2, 2, 2, 0)) == 2  # crest, eye ring; tail absent in one
    assert colour_differences((3, 3, 3, 2, 3), (3, 3, 3, 2, 3)) == 0


def test_this_process_draws_the_shipped_table():
    assert SPECIES_TABLE == "distance"
    assert build_species("distance") == SPECIES
    assert DESCRIPTION_SEED == 7 and ASSETS_DIR == ROOT / "assets" / "toybirds"
    # The lead round 29 left: the shipped table has pairs that only an absence tells apart.
    assert any(colour_differences(a, b) == 0 for a, b in itertools.combinations(_codes(SPECIES), 2))


def test_the_colour_table_keeps_the_distance_and_adds_a_colour_to_every_pair():
    species = build_species("colour")
    codes = _codes(species)
    assert len(set(codes)) == 16 and [s.name for s in species] == [s.name for s in SPECIES]
    for a, b in itertools.combinations(codes, 2):
        assert sum(x != y for x, y in zip(a, b)) >= 3
        assert colour_differences(a, b) >= 1
    # Every value of every part is still drawn by some species (each part word keeps its images).
    for k, part in enumerate(PARTS):
        assert {c[k] for c in codes} == set(range(len(PART_VALUES[part])))


def test_an_unknown_table_is_refused_by_name(tmp_path: Path):
    env = {**os.environ, "MICROCLIP_TOYWORLD_SPECIES": "hamming", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", "import microclip.toyworld.world"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode != 0 and "MICROCLIP_TOYWORLD_SPECIES='hamming'" in out.stderr and "colour" in out.stderr


def test_the_colour_world_draws_its_own_descriptions_by_the_shipped_rule(tmp_path: Path):
    got = _colour_world(
        "import json\n"
        "from microclip.toyworld import text, world\n"
        "from microclip.toyworld.text import described_parts, description_oracle_accuracy, read_assets\n"
        "sets = {n: tuple((p, getattr(world.SPECIES_BY_NAME[n], p)) for p in ps)\n"
        "        for n, ps in text.DESCRIBED_PARTS.items()}\n"
        "earlier = []\n"
        "for seed in range(text.DESCRIPTION_SEED):\n"
        "    d = described_parts(seed)\n"
        "    s = {n: tuple((p, getattr(world.SPECIES_BY_NAME[n], p)) for p in ps) for n, ps in d.items()}\n"
        "    earlier.append([len(set(s.values())), description_oracle_accuracy(d)])\n"
        "classes, templates, descriptions = read_assets(text.ASSETS_DIR)\n"
        "print(json.dumps({'table': world.SPECIES_TABLE, 'seed': text.DESCRIPTION_SEED,\n"
        "  'distinct': len(set(sets.values())), 'oracle': description_oracle_accuracy(), 'earlier': earlier,\n"
        "  'assets': str(text.ASSETS_DIR), 'bundled_match': descriptions == text.descriptions()\n"
        "    and classes == world.CLASS_NAMES and templates == text.TEMPLATES,\n"
        "  'brennic': [world.SPECIES_BY_NAME['brennic finch'].beak]}))\n",
        tmp_path,
    )
    assert got["table"] == "colour" and got["assets"] == str(ROOT / "assets" / "toybirds-colour")
    # The shipped rule: all 16 description sets distinct, at the shipped world's oracle (0.69), the first such seed.
    assert got["distinct"] == 16
    assert got["oracle"] == pytest.approx(description_oracle_accuracy(), abs=1e-9)
    assert all(distinct < 16 or oracle > got["oracle"] + 1e-9 for distinct, oracle in got["earlier"])
    assert got["bundled_match"], "assets/toybirds-colour is stale: rewrite it with write_assets under the colour table"
    assert got["brennic"] != [next(s for s in SPECIES if s.name == "brennic finch").beak]


def test_a_cache_of_one_table_is_not_taken_for_the_others(tmp_path: Path):
    """The splits and the corpus of the shipped table are regenerated, not reused, by a process of the colour table
    (the class names are the same, so nothing else would tell them apart)."""
    from microclip.toyworld.dataset import ensure_pretrain_corpus, ensure_split, split_is_current

    ensure_split(tmp_path, "test", n_per_class=1)
    corpus = ensure_pretrain_corpus(tmp_path, n_images=16, seed=0)
    assert split_is_current(tmp_path, "test", 1, 0)
    got = _colour_world(
        "import json, sys\n"
        "import numpy as np\n"
        "from microclip.toyworld.dataset import ensure_pretrain_corpus, ensure_split, split_is_current\n"
        f"root = {str(tmp_path)!r}\n"
        "before = split_is_current(root, 'test', 1, 0)\n"
        "ensure_split(root, 'test', n_per_class=1)\n"
        "ensure_pretrain_corpus(root, n_images=16, seed=0)\n"
        "with np.load(root + '/toybirds/pretrain_16_0.npz') as z: table = str(z['species_table'])\n"
        "print(json.dumps({'before': before, 'after': split_is_current(root, 'test', 1, 0), 'table': table}))\n",
        tmp_path,
    )
    assert got == {"before": False, "after": True, "table": "colour"}
    # Back in the shipped world, the colour world's cache is the stale one.
    assert not split_is_current(tmp_path, "test", 1, 0)
    ensure_pretrain_corpus(tmp_path, n_images=16, seed=0)
    import numpy as np

    with np.load(corpus) as z:
        assert str(z["species_table"]) == "distance"


def test_train_py_reads_the_descriptions_of_the_world_it_draws(tmp_path: Path):
    """The toybirds train config names the shipped table's bundled descriptions; a process drawing the colour
    table reads its own (an explicit --text_descriptions_path is read as given)."""
    code = (
        "import json\n"
        "from microclip.cli import build_train_parser, read_descriptions, read_templates\n"
        "from microclip.resources import config_file\n"
        "from microclip.toyworld import text, world\n"
        "cfg = json.loads(config_file('train_configs', 'toybirds').read_text())\n"
        "parse = build_train_parser().parse_args\n"
        "args = parse(['--dataset', 'toybirds', '--train_config', 'toybirds'])\n"
        "own = read_descriptions(args, cfg, world.CLASS_NAMES)\n"
        "given = parse(['--dataset', 'toybirds', '--train_config', 'toybirds', '--text_descriptions_path',\n"
        "               'assets/toybirds/descriptions.json'])\n"
        "print(json.dumps({'own': own == text.descriptions(),\n"
        "  'templates': read_templates(args, cfg) == text.TEMPLATES,\n"
        "  'given': read_descriptions(given, cfg, world.CLASS_NAMES) == json.loads(\n"
        "      (text.PROJECT_ROOT / 'assets/toybirds/descriptions.json').read_text())}))\n"
    )
    assert _colour_world(code, ROOT) == {"own": True, "templates": True, "given": True}


def test_a_base_of_another_table_is_refused_where_it_would_be_read_against_the_wrong_birds(tmp_path: Path):
    """A colour-table pretraining records its table (pretrain.json and the run state); a process drawing the shipped
    table refuses to resume it or to load it, naming the variable to set, and loads a base recording its own."""
    from microclip.backbone import BackboneError, create_clip
    from microclip.toyworld.pretrain import PretrainConfig, build_model, pretrain

    settings = dict(
        steps=1, dense_steps=1, batch_size=8, n_images=8, warmup_steps=0, dense_warmup_steps=0, ckpt_every=1,
        eval_train_per_class=1, eval_test_per_class=1, threads=1, data_root=str(tmp_path / "data"),
    )  # fmt: skip
    out = tmp_path / "colour-run"
    got = _colour_world(
        "import json\n"
        "from microclip.toyworld.pretrain import PretrainConfig, pretrain\n"
        f"pretrain(PretrainConfig(out={str(out)!r}, stop_after=1, **{settings!r}))\n"
        f"print(open({str(out / 'state.json')!r}).read().replace(chr(10), ' '))\n",
        tmp_path,
    )
    assert got["species_table"] == "colour" and got["step"] == 1
    with pytest.raises(ValueError, match="'colour' species table.*MICROCLIP_TOYWORLD_SPECIES=colour"):
        pretrain(PretrainConfig(out=str(out), resume=True, **settings))

    # A finished base: its record names its table; loading it here is refused, the shipped table's base loads.
    shipped = ROOT / "checkpoints" / "toybirds-base"
    record = json.loads((shipped / "pretrain.json").read_text())
    for table in ("colour", "distance"):
        folder = tmp_path / table
        folder.mkdir()
        for name in ("open_clip_config.json", "open_clip_model.safetensors"):
            (folder / name).symlink_to(shipped / name)
        (folder / "pretrain.json").write_text(json.dumps({**record, "species_table": table}))
    with pytest.raises(BackboneError, match="MICROCLIP_TOYWORLD_SPECIES=colour"):
        create_clip(f"local-dir:{tmp_path / 'colour'}")
    with pytest.raises(ValueError, match="--init .*MICROCLIP_TOYWORLD_SPECIES=colour"):  # a fine-tune from it
        build_model(str(tmp_path / "colour"))
    create_clip(f"local-dir:{tmp_path / 'distance'}")
    create_clip(f"local-dir:{shipped}")  # its record names no table: the shipped one, as every base before round 30
