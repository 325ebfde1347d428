"""The summary's Markdown sections, one function each, in the order of the document. Every
table is a pandas DataFrame of formatted cells (model.report.tables.markdown renders it), so
the digits of every number are decided here, once."""
import math

from model import evaluation
from model.domains import DOMAIN_LABELS, ENSEMBLE, ENSEMBLE_FUSE, EVAL_MODELS, MODEL_LABELS
from model.report.checks import (CHECK_MEASURE, MEASURES, REJECT_FRACTION, ap_table,
                                 classifier_accuracy, fork_table, judged_model,
                                 uncertainty_row)
from model.report.collect import CLASS_NAMES, domain_label
from model.report.tables import frame, markdown
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


def section_ap(results):
    cols = [MODEL_LABELS[e] for e in EVAL_MODELS]
    ours, fork = ap_table(results), fork_table()
    lines = ["## Keypoint AP (COCO, single scale)", "",
             "Rows: test domain; columns: model. Ours:", ""]
    lines += _ap_markdown(ours)
    lines += ["", "The fork's published numbers (docs/recipe.md section 7; it had no fused "
              "ensemble):", ""]
    lines += _ap_markdown(fork)
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
                  "routing alone: its experts' predictions are reused):", ""]
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
             "expert runs of the fused ensemble (normal / dark / motion blur):", ""]
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


def section_uncertainty(results):
    lines = ["## Uncertainty quality", ""]
    rows, per_model = [], []
    for t, q in results.uncertainty.items():
        model = judged_model(q)
        if model is None:        # disagreement only: the set had no ground truth
            rows.append([domain_label(t), "n/a", (q.get("counts") or {}).get("people", "n/a")]
                        + ["n/a"] * 8)
            continue
        for measure in MEASURES:
            r = uncertainty_row(q, measure, model)
            if r is None:
                continue
            rows.append([domain_label(t), measure, r["people"], model, _num(r["spearman_r"]),
                         _p(r["spearman_p"]), _num(r["pearson_r"]), _num(r["ause"]),
                         _num(r["ap"]), _num(r["ap_rejected_kept_people"]),
                         _num(r["ap_rejected"])])
        corr = q.get("correlation", {}).get(CHECK_MEASURE, {})
        per_model.append([domain_label(t)] + [
            f"{_num(corr[m]['spearman_r'])} ({_p(corr[m]['spearman_p'])})" if m in corr
            else "n/a" for m in UNCERTAINTY_MODELS])
    if not rows:
        return lines + ["n/a: no <dataType>-three-model-...-quality.json in the evaluation "
                        "results folder (eval/util_ainu.py writes them)."]
    pct = f"{REJECT_FRACTION:.0%}"
    lines += ["Disagreement of the three experts per person against the error (1 - OKS) of "
              "the routed ensemble's prediction (the normal expert's where the analysis had no "
              "ensemble). AUSE: area between the sparsification curve and its oracle (0 = "
              "perfect ranking). AP after rejecting the most uncertain " + pct + " of people: "
              "on the people kept (their ground truth ignored) and against all ground truth.",
              ""]
    lines += _table(["test domain", "measure", "people", "error of", "Spearman rho", "p",
                     "Pearson r", "AUSE", "AP", f"AP, {pct} rejected (kept people)",
                     f"AP, {pct} rejected (all)"], rows)
    lines += ["", f"Spearman rho (p) of the {CHECK_MEASURE} disagreement against each model's "
              "error:", ""]
    lines += _table(["test domain", "normal expert", "dark expert", "motion-blur expert",
                     "routed ensemble"], per_model)
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
    lines += _table(["expert", "epochs", "iterations", "last train loss", "last val loss",
                     "best val loss", "config", "seed"], rows)
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
    return lines + _table(["step", "status", "seconds"], rows)


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
