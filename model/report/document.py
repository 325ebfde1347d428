"""The summary document: results/summary.md (the sections of model.report.sections),
summary.json (every number of it, for scripts) and the figures, written atomically."""
import logging
import math
import time
from pathlib import Path

import numpy as np

from model import files, paths
from model.domains import EFFECT_NAMES, EVAL_MODELS
from model.report import sections
from model.report.checks import (MEASURES, ap_table, classifier_accuracy, compute_checks,
                                 fork_table, judged_model, uncertainty_row)
from model.report.collect import collect
from model.report.figures import write_figures
from model.report.robustness import section_robustness

log = logging.getLogger(__name__)

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
SECTIONS = (sections.section_checks, sections.section_ap, sections.section_ensemble,
            section_robustness, sections.section_classifier, sections.section_uncertainty,
            sections.section_difficult, sections.section_training, sections.section_timings,
            sections.section_settings)


def render_markdown(results, figures=()):
    """The summary as Markdown: the sections in order, the figures, the notes."""
    lines = ["# Domain-expert experiment: summary", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')}; evaluation results from "
             f"`{results.eval_dir}`, images from `{results.coco_root}`.", ""]
    for section in SECTIONS:
        part = section(results)
        if part:
            lines += part + [""]
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{Path(f).stem}]({Path(f).name})", ""]
    if results.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in results.notes] + [""]
    return "\n".join(lines)


def _plain(obj):
    """JSON-safe copy: tuple keys joined with '/', NaN and inf as null, paths as strings."""
    if isinstance(obj, dict):
        return {("/".join(k) if isinstance(k, tuple) else str(k)): _plain(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _by_set(table):
    """{data_type: {model file name: AP}} of an AP frame (checks.ap_table's layout)."""
    return {t: {EFFECT_NAMES[e]: v for e, v in zip(EVAL_MODELS, row)}
            for t, row in zip(paths.EVAL_DATATYPES, table.to_numpy())}


def summary_json(results, figures):
    timings = results.timings
    return _plain({
        "checks": results.checks,
        "num_images": {t: e.num_images for t, e in results.evaluation.items()},
        "ap": _by_set(ap_table(results)),
        "fork_ap": _by_set(fork_table()),
        "metrics": {t: {EFFECT_NAMES[e]: m for e, m in entry.metrics.items()}
                    for t, entry in results.evaluation.items()},
        "classifier": {"accuracy": classifier_accuracy(results.classifier)[0],
                       "run": results.classifier.run,
                       "validation_file": results.classifier.validation_file},
        "domain_predictions": results.domain_predictions,
        "uncertainty": {t: {m: uncertainty_row(q, m, judged_model(q)) for m in MEASURES}
                        if judged_model(q) else None for t, q in results.uncertainty.items()},
        "timings": [{"step": s.step, "seconds": s.seconds, "status": s.status,
                     "seconds_when_ran": s.seconds_when_ran} for s in timings],
        "total_seconds": sum(s.seconds for s in timings), "machine": results.machine,
        "steal_percent": results.steal_percent,
        "robustness": results.robustness,
        "settings": results.settings, "figures": [Path(f).name for f in figures],
        "notes": results.notes})


def write_summary(coco_root=paths.DEFAULT_COCO_ROOT, eval_dir=paths.EVAL_RESULTS_DIR,
                  weights_dir=paths.expert_weights_dir, classifier_log_dir=paths.DOMAIN_LOG_DIR,
                  domain_dir=paths.DOMAIN_RESULTS_DIR, out_dir=paths.RESULTS_DIR, timings=None,
                  settings=None, num_images=None, classifier_validation=None, figures=True,
                  steal_percent=None):
    """Gather every stage's outputs, write <out_dir>/summary.md, summary.json and the figures
    (atomically); return the markdown text.

    weights_dir: a function effect -> the expert's output folder (model.paths.
    expert_weights_dir), or a folder holding weights<effect>/ for each expert.
    timings: model.experiment.Runner.timings, [(step, seconds, "ran" | "skipped")].
    steal_percent: the hypervisor's share of the CPU time while they ran (Runner.
    steal_percent).
    settings: the runner's flags (a dict; its "seed" is stated as the seed).
    num_images: N of the evaluation runs (default: found per test set).
    classifier_validation: validate.py's metrics.json or its folder (default: <out_dir>/
    classifier_validation/, then the newest run's validation/*/)."""
    start = time.time()
    out_dir = Path(out_dir)
    log.info("summary: reading the outputs of every stage")
    results = collect(coco_root, eval_dir, weights_dir, classifier_log_dir, domain_dir,
                      out_dir, timings, settings, num_images, classifier_validation,
                      steal_percent)
    results.checks = compute_checks(results)
    written = write_figures(results, out_dir, coco_root, eval_dir) if figures else []
    text = render_markdown(results, written)
    files.write_text(out_dir / SUMMARY_MD, text)
    files.write_json(out_dir / SUMMARY_JSON, summary_json(results, written), indent=1)
    log.info("summary: %s, %s and %d figures written in %.1f s (%d notes)",
             out_dir / SUMMARY_MD, SUMMARY_JSON, len(written), time.time() - start,
             len(results.notes))
    return text
