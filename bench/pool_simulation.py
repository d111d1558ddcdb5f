"""A pool under company traffic and a ban process, N simulated days, once with the pool brain off and once on.

    .venv/bin/python bench/pool_simulation.py [--days 60] [--seed 7] [--production-min 5] [--ready 2]
        [--warming 4] [--prospecting 12] [--follow-ups 48] [--step-minutes 60] [--activation-days 1] [--serial]

The two runs go side by side in two processes, each on its own bench database (BENCH_DATABASE_URL + `_off` /
`_on`, created and migrated on first use) and its own cache keys; `--serial` runs them one after the other here.
What runs is the pool itself, in process, under time travel (time_machine, not ticking: the clock moves only when
the simulation moves it):

- the company's traffic goes through `instances.services.message_send` (courtesy, the real `contact_route`, the
  send circuit, the gateway called once), as POST /api/v1/messages sends. Each business day (08:00-20:00 in São
  Paulo; national holidays have no campaign) `--prospecting` messages to contacts the company never wrote to
  (kind `prospecting`) and `--follow-ups` to contacts of its CRM (500 existing customers, then everyone it
  prospected; kind `follow_up`), at random moments, and an answer (kind `reply`) to most contacts who reply; every
  text is unique. The demand is drawn from the seed and the day alone: both runs get the same;
- the gateway is the project's seam (the `instances.gateway` interface, given as message_send(client=...) and
  chip_provision(evolution=...)): bench/_setup.py's null gateway (bench/warmer_dispatch.py --null-gateway) with the
  world behind it (bench/_pool_world.py: who gets into trouble, who fails, who is banned, who replies), no HTTP;
- what WhatsApp says comes back as Evolution 2.3.7 webhook envelopes through
  `instances.webhooks.evolution_event_process`: `messages.update` (DELIVERY_ACK / ERROR), `messages.upsert` (the
  contacts' replies), and a ban as `status.instance` + `connection.update` close 403. Message events are applied by
  the drain (`instances.inbox.receipts_drain`) at the end of each step and before an answer;
- the orchestrator's real cycle (`chipfarm.orchestrator.run_cycle`) every `--step-minutes` from 08:00 to 20:00
  and at 00:00, 03:00, 06:00 and 22:00; the trust score's real recompute (`warmer.services.trust_recompute`, for
  ready and production chips) every two hours. Events (sends, receipts, replies) happen at their own moments
  between the cycles.

Shortcuts (what talks to the outside or runs for weeks, made cheap but keeping its lead time):

- purchase: the cycle's own provision step decides what to buy (the warming deficit, batch, daily budget) and
  creates the chips; the provisioning task is played at once by `chip_provision` with an in-process Salvy;
- activation: a bought chip is activated (start_activation, activation_succeeded) `--activation-days` after it
  was provisioned (the SMS code, the activator);
- warming: the warmer's conversations are not simulated. A warming chip reaches the final phase with trust 95 once
  it has warmed `warmup_days` (21) — what a clean ramp gives — and from then on (final phase, ready) each day
  records what the warmer's traffic would (ChipDailyMetrics sent 30, 12 inbound events), so that the real trust
  recompute sees a warmed chip;
- the periodic instance check and the other beat tasks do not run (this world has no session drift);
  GATEWAY_EVENT_SHARDS is 1 (one drain); degraded chips stay degraded (a rewarm is the operators' call).

Brain off: CIRCUIT_ENABLED and EARLY_WARNING_ENABLED off, NEW_CONTACT_ALLOWANCE_STEPS empty (a flat
MAX_NEW_CONTACTS_PER_DAY), auto_reserve off, and the message kinds' trust minimums and hourly shares neutral (0 and
100 %): the pool before W2 5/7 (reach-out restrictions and the trust-based degrade of W2 1/7 act in both runs).
Brain on: the settings' defaults and auto_reserve on. Same seed, same world: the n-th chip of either run has the
same hidden fate, and the demand is the same.

Figures: days with production below `production_min` (business days on which a cycle found the pool critical:
active < production_min after its replacements and promotions); chips banned (random bans among them); chips
rested before a ban (the early warning rested or stopped them while they were in trouble, and they were not banned
afterwards); messages refused, by code and kind; cap violations, checked at every step (each production chip's
ChipCapacity counters against `caps_in_effect`, the run's own tally of routing decisions per chip in this hour and
business day, and at every new contact the chip's new contacts of the last 24 h against its allowance then): 0.

The default sizes fit the machine the bench was written on (2 shared cores: a send through the real router costs
30-80 ms there); the default 60 days take about 4-8 minutes of wall time, depending on the machine's load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import time

from _pool_run import RunResult, Sizes, simulate
from _setup import BENCH_DB, setup_django


def table(off: RunResult, on: RunResult, sizes: Sizes, seed: int, wall: float) -> list[str]:
    def refused(r: RunResult) -> str:
        return f"{r.refused_total}"

    rows = [
        ("days with production below production_min", off.days_short, on.days_short),
        ("chips banned (of them random bans)", f"{off.banned} ({off.banned_random})",
         f"{on.banned} ({on.banned_random})"),
        ("chips rested before a ban (rested/stopped in trouble, not banned)", off.saved, on.saved),
        ("  chips rested or stopped by the early warning", off.rested, on.rested),
        ("  ... of them in trouble at the time / banned anyway", f"{off.rested_in_trouble} / {off.rested_then_banned}",
         f"{on.rested_in_trouble} / {on.rested_then_banned}"),
        ("chips that got into trouble (hidden from the pool)", off.troubled, on.troubled),
        ("chips degraded (stopped, low trust) at the end", off.degraded, on.degraded),
        ("chips bought", off.bought, on.bought),
        ("ready_min / warmup_buffer at the end", f"{off.ready_min} / {off.warmup_buffer}",
         f"{on.ready_min} / {on.warmup_buffer}"),
        ("messages the company asked to send (+ answers)", off.demanded, on.demanded),
        ("messages refused", refused(off), refused(on)),
        ("messages accepted by the gateway", off.sent, on.sent),
        ("messages failed (gateway 500 + ERROR receipts)", off.failed, on.failed),
        ("messages delivered (DELIVERY_ACK)", off.delivered, on.delivered),
        ("cap violations", off.violations, on.violations),
        ("orchestrator cycles run", off.cycles, on.cycles),
        ("run time, s", f"{off.seconds:.0f}", f"{on.seconds:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    out = ["=" * 100,
           f"bench/pool_simulation.py: {off.days} simulated days, seed {seed}; production_min {sizes.production_min} "
           f"(max {sizes.production_max}), ready {sizes.ready}, warming {sizes.warming}; {sizes.prospecting} "
           f"prospecting + {sizes.follow_ups} follow-ups a day; a cycle every {sizes.step_minutes} min",
           f"{'metric':<{width}} | {'brain off':>12} | {'brain on':>12}",
           "-" * (width + 32)]
    out += [f"{name:<{width}} | {a!s:>12} | {b!s:>12}" for name, a, b in rows]
    for r in (off, on):
        codes = ", ".join(f"{k} {v}" for k, v in sorted(r.refused.items())) or "none"
        out.append(f"refused, brain {'on' if r.brain else 'off'}: {codes}")
        out += [f"VIOLATION ({'on' if r.brain else 'off'}): {note}" for note in r.violation_notes]
    out.append(f"wall time {wall:.0f} s")
    out.append("=" * 100)
    return out


def _run(brain: bool, days: int, seed: int, sizes: Sizes, database_url: str, out) -> None:
    """One run in its own process, on its own bench database and its own cache keys (the send circuits)."""
    from django.core.cache import cache

    setup_django(database_url=database_url, flush=False)
    cache.key_prefix = f"chipfarm-sim-{'on' if brain else 'off'}"
    out.put(simulate(days=days, seed=seed, brain=brain, sizes=sizes))


def run_both(*, days: int, seed: int, sizes: Sizes, serial: bool) -> tuple[RunResult, RunResult]:
    """Brain off and brain on, side by side in two processes (each on its own bench database: BENCH_DATABASE_URL
    with _off / _on), or one after the other in this process with `serial`."""
    if serial:
        setup_django(flush=False)
        return (simulate(days=days, seed=seed, brain=False, sizes=sizes),
                simulate(days=days, seed=seed, brain=True, sizes=sizes))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_run, args=(brain, days, seed, sizes, f"{BENCH_DB}_{'on' if brain else 'off'}",
                                              out)) for brain in (False, True)]
    for w in workers:
        w.start()
    results: list[RunResult] = []
    while len(results) < 2:
        try:
            results.append(out.get(timeout=5))
        except queue.Empty:
            if any(w.exitcode for w in workers):
                for w in workers:
                    w.kill()
                raise SystemExit("a run failed (its traceback is above)") from None
    for w in workers:
        w.join()
    results.sort(key=lambda r: r.brain)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7, help="the world's and the traffic's random streams")
    parser.add_argument("--production-min", type=int, default=Sizes.production_min)
    parser.add_argument("--ready", type=int, default=Sizes.ready, help="ready_min")
    parser.add_argument("--warming", type=int, default=Sizes.warming, help="warmup_buffer")
    parser.add_argument("--prospecting", type=int, default=Sizes.prospecting, help="new contacts a day")
    parser.add_argument("--follow-ups", type=int, default=Sizes.follow_ups, help="follow-ups a day")
    parser.add_argument("--step-minutes", type=int, default=Sizes.step_minutes, help="cycle every, business hours")
    parser.add_argument("--activation-days", type=float, default=Sizes.activation_days)
    parser.add_argument("--serial", action="store_true", help="one run after the other, in this process")
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "ERROR")  # the pool logs every rest and failed send
    sizes = Sizes(production_min=args.production_min, ready=args.ready, warming=args.warming,
                  prospecting=args.prospecting, follow_ups=args.follow_ups, step_minutes=args.step_minutes,
                  activation_days=args.activation_days)
    started = time.perf_counter()
    off, on = run_both(days=args.days, seed=args.seed, sizes=sizes, serial=args.serial)
    print("\n".join(table(off, on, sizes, args.seed, time.perf_counter() - started)))


if __name__ == "__main__":
    main()
