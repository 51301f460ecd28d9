"""The command line end to end on the embedded digits example."""
import json
import math
import subprocess
import sys

import pytest

from mpq.cli import main
from mpq.schema import Plan, Problem, load_document

ESTIMATOR = ["--estimator", "hessian-trace", "--quiet"]


def independent_bits(layer):
    """The size convention (mpq/sizes.py), written out again here on purpose (not via mpq.sizes)."""
    shape = layer["shape"]
    params = math.prod(shape)
    if layer["format"] == "float":
        return 16 * params
    k = params // shape[0]
    scales = shape[0] if layer["group_size"] is None else shape[0] * math.ceil(k / layer["group_size"])
    return params * layer["w_bits"] + scales * 16 + (0 if layer["symmetric"] else scales * layer["w_bits"])


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    # the demo: no model and no budget plan the digits example at avg_bits=3 with per-channel and g32 options
    code = main(["plan", *ESTIMATOR, "-o", str(out / "plan.json"),
                 "--problem-out", str(out / "problem.json")])
    assert code == 0
    return out


def test_plan_is_within_budget_optimal_and_recounts_exactly(planned):
    data = json.loads((planned / "plan.json").read_text())
    assert data["schema"] == "mpq.plan/v1"
    # the additive optimum, or its measured refinement (then "feasible", with the optimum's bound)
    assert data["solver"]["status"] == ("feasible" if data["solver"]["name"].endswith("+refine") else "optimal")
    bits = [independent_bits(l) for l in data["layers"]]
    assert [math.ceil(b / 8) for b in bits] == [l["bytes"] for l in data["layers"]]
    assert data["totals"]["bytes"] == sum(math.ceil(b / 8) for b in bits)
    params = sum(l["params"] for l in data["layers"])
    assert data["totals"]["avg_bits"] == pytest.approx(sum(bits) / params)
    assert data["totals"]["avg_bits"] <= 3.0
    assert len({l["w_bits"] for l in data["layers"]}) > 1, "the demo budget should give a mixed plan"


def test_mixed_plan_beats_uniform_of_same_or_larger_size(planned):
    from mpq.evaluate import evaluate_plans, uniform_baselines
    from mpq.model_ref import load_workload

    plan = load_document(planned / "plan.json", Plan)
    problem = load_document(planned / "problem.json", Problem)
    uniform = uniform_baselines(problem, plan)["same_or_larger"]
    assert uniform is not None and uniform.totals.bytes >= plan.totals.bytes
    evals = evaluate_plans(load_workload(None), {"mixed": plan, "uniform": uniform})
    acc = {e.label: e.metrics["accuracy"] for e in evals}
    assert acc["mixed"] >= acc["uniform"]


def test_solve_reproduces_the_optimum_with_both_exact_solvers(planned, capsys):
    objectives = []
    for solver in ("ilp", "dp"):
        assert main(["solve", str(planned / "problem.json"), "--solver", solver, "-o", str(planned / f"{solver}.json")]) == 0
        objectives.append(load_document(planned / f"{solver}.json", Plan).solver.objective)
    assert objectives[0] == pytest.approx(objectives[1], rel=1e-9)


def test_infeasible_budget_exits_3_naming_the_smallest_budget(planned):
    r = subprocess.run([sys.executable, "-m", "mpq.cli", "solve", str(planned / "problem.json"), "--budget", "avg_bits=1"],
                       capture_output=True, text=True)
    assert r.returncode == 3  # EXIT_INFEASIBLE
    assert "max_avg_bits=1 is infeasible: the smallest plan needs max_avg_bits=2.0" in r.stderr
    assert "Traceback" not in r.stderr


def test_apply_eval_reports_before_and_after(planned, capsys):
    assert main(["apply", "mpq.examples.digits:workload", str(planned / "plan.json"), "--eval",
                 "--save", str(planned / "q.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "before" in out and "after" in out
    from safetensors import safe_open

    with safe_open(str(planned / "q.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["mpq_plan"])
    assert meta["schema"] == "mpq.plan/v1"


@pytest.mark.parametrize(
    "argv,needle,code",
    [
        (["plan", "mpq.examples.digits:workload"], "--budget is required", 2),
        (["plan", "--budget", "avg_bits=-2"], "must be a positive finite number", 2),
        (["plan", "--budget", "speed=3"], "unknown key 'speed'; known keys: avg_bits, mb", 2),
        (["plan", "--budget", "avg_bits=3", "--estimator", "nope"], "unknown estimator 'nope'; available:", 2),
        (["plan", "--budget", "avg_bits=3", "--solver", "nope", "--estimator", "weight-error"], "unknown solver 'nope'", 2),
        (["layers", "no_such_module:workload"], "cannot import module 'no_such_module'", 5),  # EXIT_LOAD
        (["solve", "/nonexistent/problem.json"], "cannot read", 2),
    ],
)
def test_bad_cli_input_gets_one_clear_error(argv, needle, code, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert needle in err


def test_schema_and_layers_commands(capsys):
    assert main(["schema", "problem"]) == 0
    assert json.loads(capsys.readouterr().out)["properties"]["schema"]["const"] == "mpq.problem/v1"
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "classifier.2" in out and "47,376 weights" in out


UNSEEN_MLP = '''
import torch
from torch import nn
from mpq import Workload


def workload():
    g = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.7
    batches = [(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(2)]
    return Workload(model, batches, nn.functional.cross_entropy)
'''


def test_default_hessian_trace_on_an_unseen_mlp_is_within_5_percent_and_4_stderr(tmp_path, monkeypatch):
    (tmp_path / "unseen_mlp.py").write_text(UNSEEN_MLP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["sensitivity", "unseen_mlp:workload", "--estimator", "hessian-trace", "--quiet", "-o", "s.json"]) == 0
    table = json.loads((tmp_path / "s.json").read_text())
    from torch import nn

    from mpq.model_ref import load_workload
    from tests.helpers.models import exact_block_traces

    wl = load_workload("unseen_mlp:workload")
    linear = [name for name, m in wl.model.named_modules() if isinstance(m, nn.Linear)]
    exact = exact_block_traces(wl.model, wl.batches, wl.loss_fn, linear)  # batches of equal size: the mean loss
    assert set(table["layers"]) == set(exact)
    for name, value in exact.items():
        got = table["layers"][name]
        err = abs(got["trace"] - value)
        assert err <= 0.05 * abs(value), (name, got["trace"], value)
        assert err <= 4 * got["stderr"] + 1e-9 * abs(value), (name, got, value)


def test_solve_builds_only_its_own_arguments_and_never_imports_torch(planned):
    """``mpq solve`` on a problem file is a solver run: the parser builds only the solve command's
    arguments (other commands' options name estimators and exporters, which import torch), and
    nothing that only models, searches or progress bars use is imported either."""
    code = ("import sys; from mpq.cli import main; "
            f"code = main(['solve', {str(planned / 'problem.json')!r}, '-o', {str(planned / 'again.json')!r}]); "
            "print(code, 'torch' in sys.modules); "
            "print(sorted({'networkx', 'optuna', 'sqlalchemy', 'tqdm', 'transformers', 'safetensors'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["0", "False", "[]"], out.stderr
    assert load_document(planned / "again.json", Plan).solver.status == "optimal"


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["-v", "--version"]])
def test_top_level_flags_build_no_command_arguments(argv):
    """``mpq --version`` and ``mpq --help`` name no command: no command's arguments are built, so
    nothing they name (estimators, exporters, torch) is imported, and the answer comes at once."""
    code = ("import sys; from mpq.cli import main\n"
            f"try: main({argv!r})\n"
            "except SystemExit as e: print('exit', e.code)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-3:] == ["exit", "0", "False"], (out.stdout, out.stderr)
    assert ("mpq " in out.stdout) if "--version" in argv else ("solve" in out.stdout)


def test_plan_writes_a_columnar_problem_that_solve_reads(tmp_path):
    """`mpq plan --problem-out x.npz` writes the columnar form (it wrote JSON under the .npz name, which
    `mpq solve` then refused as pickled data)."""
    assert main(["plan", *ESTIMATOR, "--refine", "0", "--no-eval", "-o", str(tmp_path / "plan.json"),
                 "--problem-out", str(tmp_path / "problem.npz")]) == 0
    assert (tmp_path / "problem.npz").read_bytes()[:4] == b"PK\x03\x04"
    assert main(["solve", str(tmp_path / "problem.npz"), "-o", str(tmp_path / "again.json")]) == 0
    first, again = (json.loads((tmp_path / n).read_text()) for n in ("plan.json", "again.json"))
    assert [l["option"] for l in again["layers"]] == [l["option"] for l in first["layers"]]
