"""The run index names every stage's role from its manifest alone, and every consumer (eval,
predict, report, pseudolabel and retrain defaults) takes its answer."""
import json

import pytest

from pipeline.errors import PhfaError
from pipeline.runtime import layout
from pipeline.runtime.runindex import RunIndex, main

ALL = ["object", "category", "background"]


def _phase(adversarial=False, align=(), target_labels=False):
    return {"name": "1", "adversarial": adversarial, "align": list(align), "target_labels": target_labels}


def _stage(run, name, finished, sources=("gta5",), style="raw", phases=(_phase(),), from_stage=None,
           status="finished", model=True):
    d = run / name
    d.mkdir(parents=True)
    man = {"stage": name, "status": status, "finished": finished, "target": "cityscapes", "sources": list(sources),
           "source_style": style, "phases": list(phases)}
    if from_stage:
        man["from_stage"] = from_stage
    (d / layout.MANIFEST).write_text(json.dumps(man))
    if model:
        (d / layout.FINAL).write_bytes(b"")


def _chain(run, names):
    """A whole run under the given folder names (so, aa, phfa_raw, phfa_it, pl, rt, rt2, pl_other, rt_other, orc)."""
    n = names
    _stage(run, n["so"], "2026-01-01T00:01")
    _stage(run, n["aa"], "2026-01-01T00:02", phases=[_phase(adversarial=True)])
    _stage(run, n["phfa_raw"], "2026-01-01T00:03", sources=("unity", "gta5"),
           phases=[_phase(adversarial=True), _phase(adversarial=True, align=ALL)])
    _stage(run, n["phfa_it"], "2026-01-01T00:04", sources=("unity", "gta5"), style="translated",
           phases=[_phase(adversarial=True), _phase(adversarial=True, align=ALL)])
    _stage(run, n["pl"], "2026-01-01T00:05", sources=(), phases=(), from_stage=n["phfa_it"], model=False)
    _stage(run, n["rt"], "2026-01-01T00:06", sources=("unity", "gta5"), style="translated",
           phases=[_phase(True, (), True), _phase(True, ALL, True)], from_stage=n["phfa_it"])
    _stage(run, n["rt2"], "2026-01-01T00:07", sources=("unity", "gta5"), style="translated",
           phases=[_phase(True, (), True), _phase(True, ALL, True)], from_stage=n["rt"])
    # a retrain of the +AA variant, finished last: not the final model (it does not descend from PHFA)
    _stage(run, n["rt_other"], "2026-01-01T00:09", phases=[_phase(True, (), True)], from_stage=n["aa"])
    _stage(run, n["orc"], "2026-01-01T00:08", sources=("cityscapes",))


NAMES = {"so": "adapt-noadv-nohier", "aa": "adapt-nohier", "phfa_raw": "adapt", "phfa_it": "adapt-it",
         "pl": "pseudolabel-adapt-it", "rt": "retrain-adapt-it", "rt2": "retrain-retrain-adapt-it",
         "pl_other": "pseudolabel-adapt-nohier", "rt_other": "retrain-adapt-nohier", "orc": "adapt-oracle"}
# the same run with folder names that say nothing (kinds keep their prefix: it is the command)
OPAQUE = {"so": "adapt-a", "aa": "adapt-b", "phfa_raw": "adapt-c", "phfa_it": "adapt-d", "pl": "pseudolabel-e",
          "rt": "retrain-f", "rt2": "retrain-g", "pl_other": "pseudolabel-h", "rt_other": "retrain-i", "orc": "adapt-j"}


@pytest.mark.parametrize("names", [NAMES, OPAQUE], ids=["usual names", "opaque names"])
def test_roles_order_and_final_come_from_manifests(tmp_path, names):
    _chain(tmp_path, names)
    idx = RunIndex(tmp_path)
    n = names
    roles = {k: idx.role(v) for k, v in n.items() if v in idx.entries}
    assert roles == {"so": "source-only", "aa": "variant", "phfa_raw": "phfa", "phfa_it": "phfa", "pl": "pseudolabel",
                     "rt": "retrain", "rt2": "retrain", "rt_other": "retrain", "orc": "oracle"}
    assert (idx.round(n["rt"]), idx.round(n["rt2"]), idx.round(n["rt_other"]), idx.round(n["phfa_it"])) == (1, 2, 1, 0)
    assert idx.root(n["rt2"]) == n["phfa_it"] and idx.root(n["rt_other"]) == n["aa"]
    assert idx.source_only() == n["so"] and idx.oracle() == n["orc"]
    assert idx.phfa() == n["phfa_it"]            # translated sources win over raw
    assert idx.final() == n["rt2"]               # the last round of the PHFA chain, not the latest retrain
    assert idx.adaptation() == n["phfa_it"]
    assert idx.latest("pseudolabel") == n["pl"]
    assert idx.models() == [n["so"], n["aa"], n["phfa_raw"], n["phfa_it"], n["rt"], n["rt_other"], n["rt2"], n["orc"]]


def test_final_falls_back_in_the_documented_order(tmp_path):
    _stage(tmp_path, "adapt-oracle", "2026-01-01T00:09", sources=("cityscapes",))
    assert RunIndex(tmp_path).final() == "adapt-oracle"          # nothing else: the oracle
    _stage(tmp_path, "adapt-noadv-nohier", "2026-01-01T00:01")
    assert RunIndex(tmp_path).final() == "adapt-noadv-nohier"    # source-only before the oracle
    _stage(tmp_path, "adapt-nohier", "2026-01-01T00:02", phases=[_phase(adversarial=True)])
    _stage(tmp_path, "adapt-fda-nohier", "2026-01-01T00:03", style="fda", phases=[_phase(adversarial=True)])
    assert RunIndex(tmp_path).final() == "adapt-fda-nohier"      # the latest variant
    _stage(tmp_path, "adapt", "2026-01-01T00:00", sources=("unity", "gta5"),
           phases=[_phase(adversarial=True), _phase(adversarial=True, align=ALL)])
    assert RunIndex(tmp_path).final() == "adapt"                 # PHFA, however early it finished
    _stage(tmp_path, "retrain-adapt-nohier", "2026-01-01T00:04", phases=[_phase(True, (), True)],
           from_stage="adapt-nohier")
    assert RunIndex(tmp_path).final() == "retrain-adapt-nohier"  # a retrain round, even of a variant
    # unfinished stages and stages without a model play no role
    _stage(tmp_path, "retrain-late", "2026-01-01T00:10", from_stage="adapt", status="running")
    _stage(tmp_path, "adapt-nofinal", "2026-01-01T00:11", phases=[_phase(True)], model=False)
    idx = RunIndex(tmp_path)
    assert idx.final() == "retrain-adapt-nohier" and "retrain-late" not in idx.models()
    assert "adapt-nofinal" not in idx.models()


def test_an_aligning_stage_without_every_level_or_without_aa_is_a_variant(tmp_path):
    _stage(tmp_path, "adapt-x", "t1", phases=[_phase(adversarial=True, align=["object", "category"])])
    _stage(tmp_path, "adapt-y", "t2", phases=[_phase(adversarial=False, align=ALL)])
    _stage(tmp_path, "adapt-z", "t3", style="translated")            # translated source-only: a variant
    idx = RunIndex(tmp_path)
    assert [idx.role(n) for n in ("adapt-x", "adapt-y", "adapt-z")] == ["variant"] * 3
    assert idx.phfa() is None and idx.source_only() is None


def test_consumers_agree_with_the_index(tmp_path):
    from pipeline.stages.evaluate import evaluated_stages
    from pipeline.stages.predict import final_stage
    from pipeline.stages.pseudolabel import default_from_stage
    from pipeline.stages.retrain import default_labels_stage

    _chain(tmp_path, OPAQUE)
    idx = RunIndex(tmp_path)
    assert final_stage(tmp_path) == idx.final() == "retrain-g"
    assert default_from_stage(tmp_path) == "adapt-d"
    assert default_labels_stage(tmp_path) == "pseudolabel-e"
    assert evaluated_stages(tmp_path) == idx.models()


def test_cli_and_missing_run(tmp_path, capsys):
    _chain(tmp_path / "r", NAMES)
    assert main([str(tmp_path / "r"), "--final"]) == 0 and capsys.readouterr().out.strip() == "retrain-retrain-adapt-it"
    assert main([str(tmp_path / "r"), "--finished", "adapt-it"]) == 0
    assert main([str(tmp_path / "r"), "--finished", "adapt-none"]) == 1
    assert main([str(tmp_path / "nope")]) == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(PhfaError, match="does not exist"):
        RunIndex(tmp_path / "nope")
