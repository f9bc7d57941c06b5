"""TrainingSchedules (``trainer.api.schedule``, ``trainop.schedule``), table-driven: which specs are refused and with
which line; which tick runs at ``now`` (missed ticks, deadlines, > 100 missed, time zones and DST); the decision for
each concurrency policy, suspend, the history limits and promotion; a schedule driven through an operator killed
after any step never gets two runs for one tick; the generated CRD."""

from __future__ import annotations

import copy
import pathlib
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import jsonschema
import pytest
import yaml
from trainop import crd
from trainop import schedule as sc
from trainop.schedule_promotion import promotion_event

from tests.operator.test_crd import _model_paths, _schema_paths, to_json_schema
from trainer.api.manifest import SpecError
from trainer.api.schedule import TrainingScheduleSpec, TrainingScheduleStatus, parse_schedule
from trainer.api.status import PromotionStatus

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "schedule.yaml").read_text())
TEMPLATE = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())["spec"]
PREFIX = "s3://checkpoints/runs"
CREATED = "2026-01-01T00:00:00Z"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def body(status: dict[str, Any] | None = None, name: str = "daily", **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingSchedule",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": "tsc-uid",
            "generation": 2,
            "creationTimestamp": CREATED,
        },
        "spec": {"schedule": "* * * * *", "template": {"spec": copy.deepcopy(TEMPLATE)}, **spec},
    }
    if status is not None:
        doc["status"] = status
    return doc


def plan_of(doc: dict[str, Any]) -> sc.Plan:
    return sc.Plan.of(doc, PREFIX)


def run(
    name: str,
    phase: str | None = "Running",
    at: str = "2026-01-01T00:00:00Z",
    done: str | None = None,
    promotion: dict[str, Any] | None = None,
    deleting: bool = False,
) -> sc.OwnedRun:
    return sc.OwnedRun(
        name=name,
        uid=f"uid-{name}",
        phase=phase,
        scheduled=utc(at),
        completed=utc(done) if done else None,
        promotion=PromotionStatus.model_validate(promotion) if promotion else None,
        deleting=deleting,
    )


def decide(doc: dict[str, Any], runs: list[sc.OwnedRun], now: str) -> sc.Decision:
    return sc.decide(plan_of(doc), doc, runs, utc(now))


# --- validation ------------------------------------------------------------------------------------------------

# (case, spec fields, the one problem expected (a prefix))
INVALID = [
    ("out-of-range", {"schedule": "61 * * * *"}, "spec.schedule: '61 * * * *' is not a cron schedule"),
    ("six-fields", {"schedule": "*/5 * * * * *"}, "spec.schedule: '*/5 * * * * *' has 6 fields; expected five"),
    ("one-word", {"schedule": "daily"}, "spec.schedule: 'daily' has 1 fields"),
    ("bad-macro", {"schedule": "@reboot"}, "spec.schedule: '@reboot' is not a cron macro"),
    ("never-fires", {"schedule": "0 0 31 2 *"}, "spec.schedule: '0 0 31 2 *' never fires"),
    ("tz-inside", {"schedule": "CRON_TZ=UTC 0 3 * * *"}, "spec.schedule: 'CRON_TZ=UTC 0 3 * * *' sets a time zone"),
    ("empty", {"schedule": " "}, "spec.schedule: empty; expected five fields"),
    ("zone-typo", {"timeZone": "Europe/Berln"}, "spec.timeZone: 'Europe/Berln' is not an IANA time zone"),
    ("zone-path", {"timeZone": "../etc/passwd"}, "spec.timeZone: '../etc/passwd' is not an IANA time zone"),
    ("policy", {"concurrencyPolicy": "Never"}, "spec.concurrencyPolicy: must be one of 'Allow', 'Forbid' or"),
    ("deadline", {"startingDeadlineSeconds": -1}, "spec.startingDeadlineSeconds: Input should be greater"),
    ("history", {"successfulRunsHistoryLimit": -1}, "spec.successfulRunsHistoryLimit: Input should be greater"),
    ("label", {"template": {"metadata": {"labels": {"a b": "x"}}, "spec": TEMPLATE}}, "spec.template.metadata.labels: 'a b'"),
    ("template", {"template": {"spec": {**TEMPLATE, "symbol": "sol"}}}, "spec.template.spec.symbol: String should match"),
    ("pod-path", {"template": {"spec": {**TEMPLATE, "checkpoint": {"uri": "/data/x"}}}}, "spec.template.spec.checkpoint.uri: '/data/x' is the pod's own"),
    ("promotion", {"promotion": {"metric": "mae"}}, "spec.promotion.metric: must be one of 'pinball' or 'mase'"),
    ("unknown", {"concurency": "Allow"}, "spec.concurency: unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "fields", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_name_their_field(case: str, fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as err:
        plan_of(body(**fields))
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(expected), err.value.problems


def test_a_long_name_is_refused() -> None:
    with pytest.raises(SpecError) as err:
        plan_of(body(name="s" * 64))
    assert err.value.problems == ["metadata.name: must be at most 63 characters (a label of every run)"]


@pytest.mark.parametrize(
    ("uri", "prefix", "base"),
    [
        (None, PREFIX, "s3://checkpoints/runs/ml/daily"),
        ("s3://models/sol/", PREFIX, "s3://models/sol"),
        ("s3://models/sol", None, "s3://models/sol"),
    ],
)
def test_checkpoint_base(uri: str | None, prefix: str | None, base: str) -> None:
    doc = body()
    doc["spec"]["template"]["spec"]["checkpoint"]["uri"] = uri
    assert sc.Plan.of(doc, prefix).base == base


def test_the_sample_parses() -> None:
    spec, _ = parse_schedule(SAMPLE["spec"], SAMPLE["metadata"]["name"])
    assert spec.concurrency_policy == "Forbid" and spec.promotion is not None


# --- which tick --------------------------------------------------------------------------------------------------

# (case, schedule, timeZone, startingDeadlineSeconds, last, now, tick expected, missed, late)
DUE = [
    ("not-yet", "* * * * *", None, None, "2026-01-01T10:00:00Z", "2026-01-01T10:00:59Z", None, 0, None),
    ("on-the-tick", "* * * * *", None, None, "2026-01-01T10:00:00Z", "2026-01-01T10:01:00Z", "2026-01-01T10:01:00Z", 1, None),
    ("late-by-secs", "* * * * *", None, None, "2026-01-01T10:00:00Z", "2026-01-01T10:01:07Z", "2026-01-01T10:01:00Z", 1, None),
    ("five-missed", "* * * * *", None, None, "2026-01-01T10:00:00Z", "2026-01-01T10:05:10Z", "2026-01-01T10:05:00Z", 5, None),
    ("exactly-100", "* * * * *", None, None, "2026-01-01T10:00:00Z", "2026-01-01T11:40:00Z", "2026-01-01T11:40:00Z", 100, None),
    ("over-100", "* * * * *", None, None, "2026-01-01T10:00:00Z", "2026-01-01T12:00:30Z", "2026-01-01T12:00:00Z", 101, None),
    ("year-down", "0 3 * * *", None, None, "2025-01-01T03:00:00Z", "2026-01-01T12:00:00Z", "2026-01-01T03:00:00Z", 101, None),
    ("deadline-window", "* * * * *", None, 120, "2026-01-01T10:00:00Z", "2026-01-01T12:00:00Z", "2026-01-01T12:00:00Z", 2, None),
    ("within-deadline", "0 3 * * *", None, 30, "2025-12-31T03:00:00Z", "2026-01-01T03:00:20Z", "2026-01-01T03:00:00Z", 1, None),
    ("past-deadline", "0 3 * * *", None, 30, "2025-12-31T03:00:00Z", "2026-01-01T03:01:00Z", None, 0, "2026-01-01T03:00:00Z"),
    ("deadline-0", "0 * * * *", None, 0, "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z", None, 0, "2026-01-01T10:00:00Z"),
    ("deadline-nothing-missed", "0 3 * * *", None, 30, "2026-01-01T03:00:00Z", "2026-01-01T12:00:00Z", None, 0, None),
    ("hourly-macro", "@hourly", None, None, "2026-01-01T10:00:00Z", "2026-01-01T13:30:00Z", "2026-01-01T13:00:00Z", 3, None),
    ("weekdays-over-weekend", "0 9 * * 1-5", "Europe/Berlin", None, "2026-01-09T08:00:00Z", "2026-01-12T08:00:00Z", "2026-01-12T08:00:00Z", 1, None),
    ("berlin-winter", "0 3 * * *", "Europe/Berlin", None, "2026-03-27T02:00:00Z", "2026-03-28T02:00:00Z", "2026-03-28T02:00:00Z", 1, None),
    ("berlin-summer", "0 3 * * *", "Europe/Berlin", None, "2026-03-28T02:00:00Z", "2026-03-29T01:30:00Z", "2026-03-29T01:00:00Z", 1, None),
    ("spring-gap", "30 2 * * *", "America/New_York", None, "2026-03-07T07:30:00Z", "2026-03-08T07:05:00Z", "2026-03-08T07:00:00Z", 1, None),
    ("autumn-first", "30 1 * * *", "America/New_York", None, "2026-10-31T05:30:00Z", "2026-11-01T05:40:00Z", "2026-11-01T05:30:00Z", 1, None),
    ("autumn-again", "30 1 * * *", "America/New_York", None, "2026-11-01T05:30:00Z", "2026-11-01T06:40:00Z", "2026-11-01T06:30:00Z", 1, None),
    ("half-hour-zone", "0 0 * * *", "Asia/Kolkata", None, "2026-01-01T18:30:00Z", "2026-01-02T18:31:00Z", "2026-01-02T18:30:00Z", 1, None),
    ("utc-ignores-dst", "0 3 * * *", "UTC", None, "2026-03-28T03:00:00Z", "2026-03-29T03:00:00Z", "2026-03-29T03:00:00Z", 1, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "cron", "tz", "deadline", "last", "now", "tick", "missed", "late"), DUE, ids=[r[0] for r in DUE]
)
def test_due(
    case: str,
    cron: str,
    tz: str | None,
    deadline: int | None,
    last: str,
    now: str,
    tick: str | None,
    missed: int,
    late: str | None,
) -> None:
    spec = TrainingScheduleSpec.model_validate(
        {
            "schedule": cron,
            "timeZone": tz,
            "startingDeadlineSeconds": deadline,
            "template": {"spec": TEMPLATE},
        }
    )
    assert sc.due(spec, utc(last), utc(now)) == sc.Due(
        utc(tick) if tick else None, missed, utc(late) if late else None
    )


@pytest.mark.parametrize(
    ("tick", "name"),
    [
        ("2026-01-01T00:00:00Z", "daily-29453760"),
        ("2026-01-01T00:01:00Z", "daily-29453761"),
        ("1970-01-01T00:00:00Z", "daily-0"),
    ],
)
def test_run_names_are_cronjobs(tick: str, name: str) -> None:
    assert sc.run_name("daily", utc(tick)) == name


def test_long_schedule_names_make_distinct_valid_run_names() -> None:
    ticks = [utc("2026-01-01T00:00:00Z") + timedelta(minutes=k) for k in range(3)]
    for schedule in ("s" * 54, "s" * 55, "s" * 63):
        names = {sc.run_name(schedule, t) for t in ticks}
        assert len(names) == 3 and all(len(n) <= 63 for n in names)
        assert sc.run_name(schedule, ticks[0]) == sc.run_name(schedule, ticks[0])  # a function of its inputs
        assert sc.run_name(schedule, ticks[0]).endswith("-29453760")


# --- decisions ---------------------------------------------------------------------------------------------------

NOW = "2026-01-01T10:00:05Z"
LAST = {"lastScheduleTime": "2026-01-01T09:59:00Z"}
TICK_NAME = "daily-29454360"  # 10:00
R1 = run("daily-29454359", "Running", "2026-01-01T09:59:00Z")
R0 = run("daily-29454358", "Pending", "2026-01-01T09:58:00Z")


def done(name: str, minute: int, phase: str = "Succeeded", **kw: Any) -> sc.OwnedRun:
    at = f"2026-01-01T09:{minute:02d}:00Z"
    return run(name, phase, at, done=f"2026-01-01T09:{minute:02d}:30Z", **kw)


# (case, spec fields, status, runs, create expected, replaced, pruned, once reasons)
DECIDE = [
    ("first-tick", {}, None, [], TICK_NAME, [], [], []),
    ("nothing-due", {}, {"lastScheduleTime": "2026-01-01T10:00:00Z"}, [], None, [], [], []),
    ("allow-overlaps", {"concurrencyPolicy": "Allow"}, LAST, [R1], TICK_NAME, [], [], []),
    ("forbid-skips", {"concurrencyPolicy": "Forbid"}, LAST, [R1], None, [], [], ["RunAlreadyActive"]),
    ("forbid-pending-counts", {"concurrencyPolicy": "Forbid"}, LAST, [R0], None, [], [], ["RunAlreadyActive"]),
    ("forbid-after-finish", {"concurrencyPolicy": "Forbid"}, LAST, [done("a", 59)], TICK_NAME, [], [], []),
    ("forbid-ignores-deleting", {"concurrencyPolicy": "Forbid"}, LAST, [run("x", deleting=True)], TICK_NAME, [], [], []),
    ("replace-deletes-active", {"concurrencyPolicy": "Replace"}, LAST, [R0, R1, done("a", 57)], TICK_NAME, [R0.name, R1.name], [], []),
    ("replace-none-active", {"concurrencyPolicy": "Replace"}, LAST, [done("a", 57)], TICK_NAME, [], [], []),
    ("suspended", {"suspend": True}, LAST, [], None, [], [], []),
    ("suspended-prunes", {"suspend": True, "successfulRunsHistoryLimit": 0}, LAST, [done("a", 57)], None, [], ["a"], []),
    ("restart-found-its-run", {}, LAST, [run(TICK_NAME, "Pending", "2026-01-01T10:00:00Z")], None, [], [], []),
    ("run-newer-than-status", {}, {"lastScheduleTime": "2026-01-01T09:00:00Z"}, [run(TICK_NAME, "Pending", "2026-01-01T10:00:00Z")], None, [], [], []),
    ("deadline-missed", {"startingDeadlineSeconds": 3}, LAST, [], None, [], [], ["MissSchedule"]),
    ("deadline-met", {"startingDeadlineSeconds": 10}, LAST, [], TICK_NAME, [], [], []),
    ("too-many-missed", {}, {"lastScheduleTime": "2025-12-31T10:00:00Z"}, [], TICK_NAME, [], [], ["TooManyMissedTimes"]),
    ("from-creation", {}, None, [], TICK_NAME, [], [], ["TooManyMissedTimes"]),
    (
        "history-limits",
        {"successfulRunsHistoryLimit": 2, "failedRunsHistoryLimit": 1},
        {"lastScheduleTime": "2026-01-01T10:00:00Z"},
        [done("s1", 51), done("f1", 52, "Failed"), done("s2", 53), done("s3", 54), done("f2", 55, "Failed"), done("s4", 56), R1],
        None, [], ["s1", "f1", "s2"], [],
    ),
    (
        "history-zero",
        {"successfulRunsHistoryLimit": 0, "failedRunsHistoryLimit": 0},
        {"lastScheduleTime": "2026-01-01T10:00:00Z"},
        [done("s1", 51), done("f1", 52, "Failed"), R1],
        None, [], ["s1", "f1"], [],
    ),
    ("history-default-3-1", {}, {"lastScheduleTime": "2026-01-01T10:00:00Z"}, [done(f"s{k}", 50 + k) for k in range(5)], None, [], ["s0", "s1"], []),
]  # fmt: skip


CREATED_AT = {"first-tick": "2026-01-01T09:59:30Z", "from-creation": "2025-12-31T00:00:00Z"}


@pytest.mark.parametrize(
    ("case", "fields", "status", "runs", "create", "replaced", "pruned", "once"),
    DECIDE,
    ids=[r[0] for r in DECIDE],
)
def test_decide(
    case: str,
    fields: dict[str, Any],
    status: dict[str, Any] | None,
    runs: list[sc.OwnedRun],
    create: str | None,
    replaced: list[str],
    pruned: list[str],
    once: list[str],
) -> None:
    doc = body(status, **fields)
    doc["metadata"]["creationTimestamp"] = CREATED_AT.get(case, CREATED)
    d = decide(doc, runs, NOW)
    assert (d.create["metadata"]["name"] if d.create else None) == create
    assert [r.name for r in d.replace] == replaced
    assert [r.name for r in d.prune] == pruned
    assert [e.reason for e in d.once.values()] == once
    assert (d.created is not None) == (create is not None)
    assert [e.reason for e in d.events] == ["SuccessfulDelete"] * len(replaced)
    new = TrainingScheduleStatus.parse({**(status or {}), **d.status})
    active = {r.name for r in runs if not r.finished and not r.deleting} - set(replaced) | (
        {create} if create else set()
    )
    assert {a.name for a in new.active or ()} == active and new.active_count == len(active)
    wanted = "2026-01-01T10:00:00Z" if create or case.startswith(("restart", "run-newer")) else None
    assert new.last_schedule_time == (wanted or (status or {}).get("lastScheduleTime"))
    assert new.next_schedule_time == (None if fields.get("suspend") else "2026-01-01T10:01:00Z")


def test_a_ticks_run() -> None:
    doc = body(
        LAST,
        timeZone="Asia/Tokyo",
        schedule="0 1 * * *",
        promotion={"metric": "pinball", "minImprovement": 0.01},
    )
    doc["spec"]["template"]["metadata"] = {"labels": {"team": "quant"}, "annotations": {"note": "x"}}
    plan = plan_of(doc)
    d = sc.decide(plan, doc, [], utc("2026-01-01T16:00:10Z"))  # 01:00 on 2 January in Tokyo
    assert d.create is not None
    name = "daily-29454720"
    assert d.create["metadata"] == {
        "name": name,
        "labels": {"team": "quant", "cryptopredictor.dev/schedule": "daily"},
        "annotations": {"note": "x", "cryptopredictor.dev/scheduled-at": "2026-01-01T16:00:00Z"},
    }
    spec = d.create["spec"]
    assert spec["data"]["end"] == "2026-01-02"  # the tick's date where it is scheduled
    assert spec["checkpoint"]["uri"] == f"s3://checkpoints/runs/ml/daily/{name}"
    assert spec["promotion"] == {
        "metric": "pinball",
        "source": "validation",
        "minImprovement": 0.01,
        "uri": "s3://checkpoints/runs/ml/daily",
    }
    assert spec["training"] == TEMPLATE["training"]
    assert plan.template["data"]["end"] is None  # the template is left as it was
    assert plan.template["checkpoint"]["uri"] is None


def test_promotion_from_the_template_and_none() -> None:
    doc = body(LAST)
    assert "promotion" not in (decide(doc, [], NOW).create or {})["spec"]
    doc["spec"]["template"]["spec"]["promotion"] = {"metric": "mase", "uri": "s3://models/current"}
    assert (decide(doc, [], NOW).create or {})["spec"]["promotion"]["uri"] == "s3://models/current"


# --- promotion ---------------------------------------------------------------------------------------------------

UP = {"promoted": True, "metric": "pinball", "source": "validation", "value": 0.031, "incumbent": 0.033,
      "minImprovement": 0.01, "modelUri": "s3://m/a/best.pt"}  # fmt: skip
DOWN = {**UP, "promoted": False, "value": 0.034, "modelUri": None, "message": "not 1% lower"}
CURRENT = {"run": "old", "uri": "s3://m/old/best.pt", "metric": "pinball", "value": 0.033,
           "promotedAt": "2026-01-01T09:00:00Z"}  # fmt: skip
QUIET = {"lastScheduleTime": "2026-01-01T10:00:00Z"}

# (case, status, runs, events expected, currentModel.run expected, reported expected)
PROMOTION = [
    ("promoted", QUIET, [done("a", 50, promotion=UP)], ["Promoted"], "a", ["a"]),
    ("not-promoted", {**QUIET, "currentModel": CURRENT}, [done("a", 50, promotion=DOWN)], ["NotPromoted"], "old", ["a"]),
    ("reported-once", {**QUIET, "promotionsReported": ["a"]}, [done("a", 50, promotion=UP)], [], "a", ["a"]),
    ("not-finished", QUIET, [run("a", "Running", promotion=UP)], [], None, None),
    ("no-promotion", QUIET, [done("a", 50)], [], None, None),
    ("newest-wins", QUIET, [done("a", 50, promotion=UP), done("b", 52, promotion=UP), done("c", 54, promotion=DOWN)], ["Promoted", "Promoted", "NotPromoted"], "b", ["a", "b", "c"]),
    ("older-than-current", {**QUIET, "currentModel": {**CURRENT, "promotedAt": "2026-01-01T09:55:00Z"}, "promotionsReported": ["a"]}, [done("a", 50, promotion=UP)], [], "old", ["a"]),
    ("pruned-run-stays-current", {**QUIET, "currentModel": CURRENT, "promotionsReported": ["gone"]}, [done("b", 52, promotion=DOWN)], ["NotPromoted"], "old", ["b"]),
    ("failed-after-promotion", QUIET, [done("a", 50, "Failed", promotion=DOWN)], ["NotPromoted"], None, ["a"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "status", "runs", "events", "current", "reported"), PROMOTION, ids=[r[0] for r in PROMOTION]
)
def test_promotion(
    case: str,
    status: dict[str, Any],
    runs: list[sc.OwnedRun],
    events: list[str],
    current: str | None,
    reported: list[str] | None,
) -> None:
    d = decide(body(status, successfulRunsHistoryLimit=10), runs, NOW)
    assert [e.reason for e in d.events] == events
    new = TrainingScheduleStatus.parse({**status, **d.status})
    assert (new.current_model.run if new.current_model else None) == current
    assert new.promotions_reported == reported


def test_promotion_events_give_both_figures() -> None:
    up, down = (
        promotion_event(done("a", 50, promotion=UP)),
        promotion_event(done("b", 51, promotion=DOWN)),
    )
    assert up.message == (
        "a promoted: pinball (validation) 0.031 vs current 0.033, at least 1% lower needed; "
        "current model s3://m/a/best.pt"
    )
    assert down.message == (
        "b not promoted: pinball (validation) 0.034 vs current 0.033, at least 1% lower needed: not 1% lower"
    )
    first = promotion_event(done("c", 52, promotion={**UP, "incumbent": None, "minImprovement": 0}))
    assert "0.031 vs current none;" in first.message


def test_current_model_fields() -> None:
    d = decide(body(QUIET), [done("a", 50, promotion=UP)], NOW)
    assert d.status["currentModel"] == {
        "uri": "s3://m/a/best.pt",
        "run": "a",
        "metric": "pinball",
        "source": "validation",
        "value": 0.031,
        "promotedAt": "2026-01-01T09:50:30Z",
    }


# --- conditions, invalid specs -------------------------------------------------------------------------------------


def test_conditions_and_invalid() -> None:
    doc = body(LAST, suspend=True)
    status = decide(doc, [], NOW).status
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds == {"Ready": ("True", "Suspended"), "Suspended": ("True", "Suspended")}
    assert status["observedGeneration"] == 2
    err = SpecError("TrainingSchedule daily", ["spec.schedule: bad"])
    first = sc.invalid(body(), err, utc(NOW))
    assert [(e.type, e.reason, e.message) for e in first.events] == [
        ("Warning", "InvalidSpec", "spec.schedule: bad")
    ]
    again = sc.invalid(body(first.status), err, utc(NOW))
    assert again.events == [] and again.status == {}


def test_a_quiet_round_writes_nothing() -> None:
    doc = body(LAST)
    first = decide(doc, [], NOW)
    doc["status"] = {**LAST, **first.status}
    assert first.create is not None
    again = decide(doc, [run(TICK_NAME, "Pending", "2026-01-01T10:00:00Z")], "2026-01-01T10:00:20Z")
    assert again.create is None
    assert set(again.status) <= {"active"}  # the new run's uid, now known


# --- an operator killed after any step ---------------------------------------------------------------------------


def test_killed_operators_never_run_a_tick_twice() -> None:
    """The handler's steps (delete, create, status, prune) with the operator killed after any of them and restarted
    minutes later or at once: every run is of a distinct tick, and each tick since the first has at most one."""
    for seed in range(10):
        rnd = random.Random(seed)
        doc = body(concurrencyPolicy=rnd.choice(["Allow", "Forbid", "Replace"]), successfulRunsHistoryLimit=2)
        doc["metadata"]["creationTimestamp"] = "2026-01-01T09:59:30Z"
        runs: dict[str, dict[str, Any]] = {}
        created: list[str] = []
        now, plan = utc("2026-01-01T10:00:00Z"), plan_of(doc)
        for _ in range(50):
            now += timedelta(seconds=rnd.choice([5, 20, 61, 200]))
            owned = [sc.OwnedRun.of(r) for r in runs.values()]
            d = sc.decide(plan, doc, owned, now)
            if rnd.random() < 0.2:
                continue  # killed before acting
            for r in d.replace:
                runs.pop(r.name, None)
            if d.create is not None and d.create["metadata"]["name"] not in runs:
                runs[d.create["metadata"]["name"]] = {
                    **copy.deepcopy(d.create),
                    "status": {"phase": "Pending"},
                }
                created.append(d.create["metadata"]["annotations"][sc.SCHEDULED_AT])
            if rnd.random() < 0.3:
                continue  # killed after the create, before the status
            doc["status"] = {
                k: v for k, v in {**(doc.get("status") or {}), **d.status}.items() if v is not None
            }
            for r in d.prune:
                runs.pop(r.name, None)
            for child in list(runs.values()):  # the runs go on: some finish
                if child["status"]["phase"] == "Pending" and rnd.random() < 0.5:
                    child["status"] = {
                        "phase": rnd.choice(["Succeeded", "Failed"]),
                        "completionTime": "2026-01-01T10:00:00Z",
                    }
        assert created and max(Counter(created).values()) == 1, created
        assert created == sorted(created)


# --- the CRD -----------------------------------------------------------------------------------------------------


def schedule_schema() -> dict[str, Any]:
    return dict(crd.build_schedule_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_schedule_crd_files_are_generated() -> None:
    text = crd.render_schedule()
    assert (ROOT / "manifests" / "crd-schedule.yaml").read_text() == text, "run scripts/sync-manifests.sh"
    assert (
        ROOT / "charts" / "crypto-price-predictor" / "crds" / "trainingschedules.yaml"
    ).read_text() == text


def test_schedule_schema_is_the_models() -> None:
    schema = schedule_schema()
    for model, node in (
        (TrainingScheduleSpec, schema["properties"]["spec"]),
        (TrainingScheduleStatus, schema["properties"]["status"]),
    ):
        assert _model_paths(model) == _schema_paths(node)
    template = schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]
    assert template["properties"] == crd.spec_schema()["properties"]
    rules = [r["rule"] for r in template.get("x-kubernetes-validations", [])]
    assert rules and not any("oldSelf" in r for r in rules)
    names = crd.build_schedule_crd()["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TrainingSchedule",
        "trainingschedules",
        ["tsc"],
    )
    columns = crd.build_schedule_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Schedule",
        "Suspend",
        "Active",
        "Last Schedule",
        "Current",
        "Age",
    ]


def test_the_sample_and_a_status_validate_against_the_schema() -> None:
    schema = to_json_schema(schedule_schema())
    doc = copy.deepcopy(SAMPLE)
    d = sc.decide(plan_of(body(QUIET)), body(QUIET), [done("a", 50, promotion=UP), R1], utc(NOW))
    doc["status"] = d.status
    jsonschema.validate(doc, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "spec": {**doc["spec"], "concurrencyPolicy": "Never"}}, schema)
