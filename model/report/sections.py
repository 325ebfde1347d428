"""The summary's Markdown sections, one function each, in the order of the document. Every
table is a pandas DataFrame of formatted cells (model.report.tables.markdown renders it), so
the digits of every number are decided here, once."""
import math

from model import evaluation
from model.domains import (BASE, DOMAIN_LABELS, ENSEMBLE, ENSEMBLE_FUSE, EVAL_MODELS,
                           MODEL_LABELS)
from model.report.checks import (CHECK_MEASURE, MEASURES, REJECT_FRACTION, ap_table,
                                 classifier_accuracy, fork_table, judged_model,
                                 uncertainty_row)
from model.report.collect import CLASS_NAMES, domain_label
from model.report.tables import frame, markdown
from model.uncertainty import DETECTION_DEFINITION, POSE_DEFINITION
from model.uncertainty import MODEL_LABELS as UNCERTAINTY_MODELS

CHECKS_HEADING = "## Checks: the results must mean something"


def _num(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _p(value):
    return "n/a" if value is None else f"{value:.2g}"


def _table(header, rows):
    return markdown(frame(rows, header))


def _ap_markdown(table):
    """An AP frame of checks.ap_table's layout as a Markdown table of labelled, formatted
    cells."""
    shown = table.map(_num)
    shown.index = [DOMAIN_LABELS[t] for t in table.index]
    shown.columns = [MODEL_LABELS[e] for e in table.columns]
    return markdown(shown.rename_axis("test domain").reset_index())


def _class(name):
    return name.replace("_", " ")


def section_checks(results):
    count = {s: sum(c["status"] == s for c in results.checks) for s in ("PASS", "FAIL", "n/a")}
    lines = [CHECKS_HEADING, "",
             f"{count['PASS']} of {len(results.checks)} pass, {count['FAIL']} fail, "
             f"{count['n/a']} n/a (input missing).", ""]
    lines += _table(["condition", "result", "measured"],
                    [(c["name"], f"**{c['status']}**", c["measured"]) for c in results.checks])
    return lines


def _drawn_from(recorded):
    if not recorded:
        return "not recorded (a set made before its composition was recorded)"
    kind = ("with a labelled person only" if recorded.get("people_only")
            else "with and without people")
    return (f"{recorded.get('pool_images', 'n/a')} held-out val2014 images, {kind} "
            f"(seed {recorded.get('seed', 'n/a')})")


def composition_lines(results):
    """How the test sets were drawn and the share of their images without a labelled person,
    beside the fork's: COCOeval counts every detection on such an image as a false positive,
    so the share changes what an AP means."""
    rows = []
    for t, entry in results.evaluation.items():
        c = entry.composition
        if c is None:
            rows.append([domain_label(t), "n/a", "n/a", "n/a (no annotation file)"])
            continue
        share = f" ({100 * c['without_people'] / c['images']:.1f} %)" if c["images"] else ""
        rows.append([domain_label(t), str(c["images"]), f"{c['without_people']}{share}",
                     _drawn_from(c["recorded"])])
    rows.append(["the fork's sets", "1000", "about half",
                 "all of val2014, uniformly (no seed; docs/recipe.md sections 7, 11)"])
    lines = ["", "The test sets: images evaluated, how many of them have no labelled person "
             "(every detection there is a false positive for COCOeval), and what they were "
             "drawn from:", ""]
    return lines + _table(["test set", "images", "no labelled person", "drawn from"], rows)


def section_ap(results):
    cols = [MODEL_LABELS[e] for e in EVAL_MODELS]
    ours, fork = ap_table(results), fork_table()
    lines = ["## Keypoint AP (COCO, single scale)", "",
             "Rows: test domain; columns: model. Ours:", ""]
    lines += _ap_markdown(ours)
    lines += ["", "The fork's published numbers (docs/recipe.md section 7; it had no fused "
              "ensemble and no baselines):", ""]
    lines += _ap_markdown(fork)
    lines += composition_lines(results)
    ev = results.evaluation
    sizes = sorted({e.num_images for e in ev.values() if e.num_images is not None})
    lines += ["", f"Images per test set: {', '.join(map(str, sizes)) or 'n/a'}."]
    missing = [f"{domain_label(t)}: {', '.join(MODEL_LABELS[e] for e in e_.missing)}"
               for t, e_ in ev.items() if e_.missing]
    if missing:
        lines += ["", "n/a = no metrics.csv in the evaluation results folder "
                  f"({results.eval_dir}) for " + "; ".join(missing) + "."]
    rows = []
    for t, entry in ev.items():
        cells = [_num(entry.metrics.get(e, {}).get(("all", "seconds_per_image")))
                 for e in EVAL_MODELS]
        if any(c != "n/a" for c in cells):
            rows.append([domain_label(t)] + cells)
    if rows:
        lines += ["", "Prediction time, seconds per image (the routed ensemble's is the "
                  "routing alone: its experts' predictions are reused; the fused ensemble's "
                  "counts, for an image that weighs one expert alone, that expert's evaluation "
                  "time per image):", ""]
        lines += _table(["test domain"] + cols, rows)
    return lines


def section_ensemble(results):
    rows = []
    for t, entry in results.evaluation.items():
        route = entry.reports.get(ENSEMBLE)
        fuse = entry.reports.get(ENSEMBLE_FUSE)
        if not route and not fuse:
            continue
        routed = (route or {}).get("routed_images") or {}
        oracle = next((r["AP"] for r in (route or fuse).get("comparison", [])
                       if r["model"] == "oracle"), None)
        runs = (fuse or {}).get("expert_runs") or {}
        rows.append([domain_label(t)] + [routed.get(c, "n/a") for c in CLASS_NAMES]
                    + [_num((route or {}).get("route_agrees_with_oracle")), _num(oracle),
                       " / ".join(str(runs.get(c, "n/a")) for c in CLASS_NAMES)
                       if runs else "n/a"])
    if not rows:
        return []
    lines = ["## Ensembles", "",
             "Images the routed ensemble sent to each expert, how often its choice equals the "
             "per-image oracle (the expert that scores best against the ground truth), the "
             "oracle's AP (an upper bound of any per-image choice of one expert), and the "
             "images whose fused maps include each expert's (normal / dark / motion blur; "
             "an image that weighs one expert alone takes that expert's evaluation):", ""]
    lines += _table(["test domain"] + [f"routed to {_class(c)}" for c in CLASS_NAMES]
                    + ["agrees with oracle", "oracle AP", "fused: expert runs"], rows)
    return lines


def section_classifier(results):
    c = results.classifier
    lines = ["## Domain classifier", ""]
    acc, source = classifier_accuracy(c)
    if acc is None:
        lines.append(f"Validation accuracy: n/a (no run with log.csv/best.json or validation "
                     f"metrics found; run folder: {c.run or 'none'}).")
    else:
        v = c.validation or {}
        lines.append(f"Validation accuracy: **{acc:.2%}** ({source}); loss "
                     f"{_num(v.get('loss', (c.best or {}).get('val_loss')), 4)}; "
                     f"checkpoint {v.get('checkpoint', (c.best or {}).get('checkpoint'))}; "
                     f"run {c.run}.")
        if v.get("recall"):
            lines += ["", "Per-class recall: " + ", ".join(
                f"{_class(n)} {r:.3f}" for n, r in zip(v.get("classes", CLASS_NAMES), v["recall"]))
                + "."]
    dist = results.domain_predictions
    if dist:
        lines += ["", "Predicted domain (argmax) on each test set; low resolution is a domain "
                  "the classifier never saw:", ""]
        rows = []
        for t, d in dist.items():
            n = max(d["images"], 1)
            mean = " / ".join(f"{p:.3f}" for p in d["mean_prob"]) if d["mean_prob"] else "n/a"
            rows.append([domain_label(t), d["images"]]
                        + [f"{d['counts'][c]} ({d['counts'][c] / n:.1%})" for c in CLASS_NAMES]
                        + [mean])
        lines += _table(["test set", "images"] + [f"predicted {_class(c)}" for c in CLASS_NAMES]
                        + ["mean probability (normal / dark / motion blur)"], rows)
    else:
        lines += ["", "Predicted domains: n/a (no <dataType>.json in the domain results "
                  "folder)."]
    return lines


def _uncertainty_rows(t, q):
    """(detection row, pose rows, risk-coverage rows, per-model Spearman row) of one set."""
    label, model = domain_label(t), judged_model(q)
    counts = q.get("counts") or {}
    people, flagged = counts.get("people"), counts.get("flagged")
    found = "n/a" if people is None or flagged is None else \
        f"{flagged} ({flagged / people:.0%})" if people else "0"
    if model is None:        # disagreement only: the set had no ground truth
        return ([label, people if people is not None else "n/a", found] + ["n/a"] * 6,
                [], [], None)
    rows = {m: uncertainty_row(q, m, model) for m in MEASURES}
    first = rows[MEASURES[0]]
    detection = [label, people, found, model, first["correct"], first["false_positives"],
                 first["misses"]] + [_num(rows[m]["auroc"]) for m in MEASURES]
    pose = [[label, m, r["people"], model, _num(r["spearman_r"]), _p(r["spearman_p"]),
             _num(r["pearson_r"]), _p(r["pearson_p"]), _num(r["ause"])]
            for m, r in rows.items()]
    risk = [[label, m, model, _num(r["ap"]), _num(r["ap_rejected_kept_people"]),
             _num(r["ap_rejected"])] for m, r in rows.items()]
    pose_all = (q.get("pose") or {}).get("correlation", {}).get(CHECK_MEASURE, {})
    per_model = [label] + [
        f"{_num(pose_all[m]['spearman_r'])} ({_p(pose_all[m]['spearman_p'])}, "
        f"{pose_all[m]['n']})" if m in pose_all else "n/a" for m in UNCERTAINTY_MODELS]
    return detection, pose, risk, per_model


def section_uncertainty(results):
    lines = ["## Uncertainty quality", ""]
    detection, pose, risk, per_model = [], [], [], []
    for t, q in results.uncertainty.items():
        d, p, r, m = _uncertainty_rows(t, q)
        detection.append(d)
        pose += p
        risk += r
        per_model += [m] if m else []
    if not detection:
        return lines + ["n/a: no <dataType>-three-model-...-quality.json in the evaluation "
                        "results folder (eval/util_ainu.py writes them)."]
    pct = f"{REJECT_FRACTION:.0%}"
    lines += ["Disagreement of the three experts per person, judged in two layers against the "
              "routed ensemble's predictions (the normal expert's where the analysis had no "
              "ensemble). A person found by fewer than two experts has disagreement 1, so the "
              "two questions are kept apart.", "",
              f"**Detection level.** {DETECTION_DEFINITION}. People: matched across the "
              "experts; found by < 2: of them, found by one expert only.", ""]
    lines += _table(["test domain", "people", "found by < 2 experts", "error of", "correct",
                     "false positives", "misses"] + [f"AUROC {m}" for m in MEASURES],
                    detection)
    if pose:
        lines += ["", f"**Pose level.** {POSE_DEFINITION}. AUSE: area between the "
                  "sparsification curve and its oracle (0 = perfect ranking).", ""]
        lines += _table(["test domain", "measure", "people", "error of", "Spearman rho", "p",
                         "Pearson r", "p", "AUSE"], pose)
        lines += ["", f"Pose level, Spearman rho (p, people) of the {CHECK_MEASURE} "
                  "disagreement against each model's error, each over its own people:", ""]
        lines += _table(["test domain", "normal expert", "dark expert", "motion-blur expert",
                         "routed ensemble"], per_model)
        lines += ["", f"**Risk-coverage** (all people): AP after rejecting the most uncertain "
                  f"{pct} of people, on the people kept (their ground truth ignored) and "
                  "against all ground truth.", ""]
        lines += _table(["test domain", "measure", "error of", "AP",
                         f"AP, {pct} rejected (kept people)", f"AP, {pct} rejected (all)"],
                        risk)
    return lines


def section_difficult(results):
    pck = evaluation.PCK_NAME
    user = [s for s in evaluation.USER_SUBSETS
            if any((s, "AP") in m for e in results.evaluation.values()
                   for m in e.metrics.values())]
    rows = []
    for t, entry in results.evaluation.items():
        for effect, m in entry.metrics.items():
            def g(subset, metric, digits=3):
                v = m.get((subset, metric))
                return "n/a" if v is None else (str(int(v)) if digits == 0 else _num(v, digits))
            rows.append([domain_label(t), MODEL_LABELS[effect], g("all", "AP"), g("all", pck),
                         g("difficult_joints", "AP"), g("difficult_joints", pck),
                         g("crowded", "num_images", 0), g("crowded", "AP"), g("crowded", pck)]
                        + [g(s, "AP") for s in user])
    if not rows:
        return ["## Difficult cases", "", "n/a: no evaluation metrics found."]
    lines = ["## Difficult cases", "",
             f"Difficult joints: hips, knees and ankles (AP with OKS over those six joints, "
             f"{pck}). Crowded: images with a crowd region or two people whose boxes overlap "
             f"with IoU > {evaluation.CROWD_IOU} (model/evaluation.py).", ""]
    lines += _table(["test domain", "model", "AP", pck, "difficult joints AP",
                     f"difficult joints {pck}", "crowded images", "crowded AP",
                     f"crowded {pck}"] + [f"{s} AP" for s in user], rows)
    return lines


def _last(column):
    values = [v for v in column or [] if math.isfinite(v)]
    return values[-1] if values else None


def _iterations(run):
    return int(_last((run.log or {}).get("iteration")) or 0)


def training_budget(experts):
    """One sentence: whether every trained column of the AP table had the same number of
    training steps from the same start, with the numbers."""
    base = experts.get(BASE)
    tuned = {e: x for e, x in experts.items() if e != BASE}
    steps = {_iterations(x) for x in tuned.values()}
    starts = {str((x.run or {}).get("weights")) for x in tuned.values()}
    names = ", ".join(MODEL_LABELS[e] for e in tuned)
    if len(steps) != 1 or len(starts) != 1:
        return ("Training budget: NOT equal: " + "; ".join(
            f"{MODEL_LABELS[e]} {_iterations(x)} steps from {(x.run or {}).get('weights')}"
            for e, x in tuned.items()) + ".")
    (n,) = steps
    if base is None:
        return f"Training budget: equal, {n} steps each from the same initialisation ({names})."
    return (f"Training budget: equal. The base network trained {_iterations(base)} steps on "
            f"normal images; each of {names} then trained {n} steps from it on its own "
            f"domain's images (the normal expert on normal ones), so every trained column "
            f"of the AP table had {_iterations(base) + n} steps from the same start.")


def section_training(results):
    lines = ["## Training", ""]
    rows = []
    for effect, x in results.experts.items():
        lg, run = x.log or {}, x.run or {}
        val = [v for v in lg.get("val_loss", []) if math.isfinite(v)]
        best = (int(lg["epoch"][lg["val_loss"].index(min(val))]) if val else None)
        rows.append([MODEL_LABELS[effect], len(lg.get("epoch", [])) or "n/a",
                     int(_last(lg.get("iteration"))) if _last(lg.get("iteration")) else "n/a",
                     _num(_last(lg.get("train_loss")), 2), _num(_last(lg.get("val_loss")), 2),
                     f"{_num(min(val), 2)} (epoch {best})" if val else "n/a",
                     run.get("config", "n/a"), run.get("seed", "n/a")])
    lines += _table(["network", "epochs", "iterations", "last train loss", "last val loss",
                     "best val loss", "config", "seed"], rows)
    lines += ["", training_budget(results.experts)]
    lg = results.classifier.log
    if lg:
        lines += ["", f"Domain classifier ({results.classifier.run}): {len(lg['epoch'])} "
                  f"epochs; last epoch train loss {_num(_last(lg.get('train_loss')), 4)}, "
                  f"accuracy {_num(_last(lg.get('train_accuracy')), 4)}; validation loss "
                  f"{_num(_last(lg.get('val_loss')), 4)}, accuracy "
                  f"{_num(_last(lg.get('val_accuracy')), 4)}."]
    else:
        lines += ["", "Domain classifier training log: n/a."]
    return lines


def section_timings(results):
    lines = ["## Wall time per step", ""]
    timings = results.timings
    if not timings:
        return lines + ["n/a: no step timings given (the summary was written outside the "
                        "runner)."]
    rows = [[t.step, t.status, f"{t.seconds:.1f}" + (
        "" if t.seconds_when_ran is None else f" (took {t.seconds_when_ran:.1f} when it ran)")]
            for t in timings]
    total = sum(t.seconds for t in timings)
    ran = sum(t.status == "ran" for t in timings)
    rows.append(["**total**", f"{ran} ran, {len(timings) - ran} skipped",
                 f"**{total:.1f}**"])
    # Times mean little without the machine: virtual machines of one CPU name differ by
    # their host (BENCHMARKS.md, "The demo").
    where = (f"Machine: {results.machine}" + (" (the skipped steps ran earlier, perhaps "
                                              "elsewhere)." if ran < len(timings) else "."))
    if results.steal_percent is not None:
        # Steal: time the machine had work for but the hypervisor ran other machines.
        where += (f" While the steps ran, the hypervisor gave {results.steal_percent:.1f} % of "
                  "the CPU time this machine had work for to other machines on its host "
                  "(steal, /proc/stat).")
    return lines + _table(["step", "status", "seconds"], rows) + ["", where]


def section_settings(results):
    lines = ["## Seed and settings", ""]
    s = results.settings
    seeds = {MODEL_LABELS[e] + " training": x.run.get("seed")
             for e, x in results.experts.items() if x.run}
    c = results.classifier
    if c.validation and c.validation.get("seed") is not None:
        seeds["domain classifier"] = c.validation["seed"]
    elif c.best and c.best.get("seed") is not None:
        seeds["domain classifier"] = c.best["seed"]
    eval_seeds = sorted({r.get("seed") for e in results.evaluation.values()
                         for r in e.runs.values() if r.get("seed") is not None})
    if eval_seeds:
        seeds["evaluation runs"] = ", ".join(map(str, eval_seeds))
    lines.append(f"Seed: **{s.get('seed', 'n/a')}** (runner setting). Seeds recorded by the "
                 "outputs: " + (", ".join(f"{k} {v}" for k, v in seeds.items()) or "none")
                 + ".")
    if s:
        lines += [""] + _table(["setting", "value"], sorted((k, f"`{v}`") for k, v in s.items()))
    return lines
