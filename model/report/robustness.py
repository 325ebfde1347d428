"""The severity sweep in the summary and as a figure: robustness.json (model.robustness,
eval/robustness.py) -> a Markdown section (mPC and rPC per model and corruption, AP per
severity) and robustness.png (AP against severity, one panel per corruption)."""
import logging
from pathlib import Path

from model import files, plots
from model.errors import UserError
from model.paths import EVAL_BASE
from model.report.tables import frame, markdown
from model.robustness import (CLEAN, CORRUPTION_LABELS, CORRUPTIONS, FORK_SEVERITY,
                              JSON_NAME)
from model.runs import robustness_folders

log = logging.getLogger(__name__)

HEADING = "## Robustness over corruption severities"


def _num(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.1f} %"


def read_report(source):
    """A sweep's report: the dict itself, or robustness.json (a file or its folder)."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    path = path / JSON_NAME if path.is_dir() else path
    report = files.read_json(path, "robustness report")
    if not isinstance(report, dict) or not {"ap", "mPC", "rPC", "models"} <= set(report):
        raise UserError(f"{path} is not a robustness report (needs ap, mPC, rPC, models)")
    return report


def _label(report, model):
    return report.get("model_labels", {}).get(model, model)


def _summary_rows(report):
    rows = []
    for m in report["models"]:
        row = [_label(report, m), _num(report["ap"][m][CLEAN]), _num(report["mPC"][m]),
               _percent(report["rPC"][m])]
        for c in CORRUPTIONS:
            entry = report["per_corruption"][c][m]
            row += [_num(entry["mPC"]), _percent(entry["rPC"])]
        rows.append(row)
    return rows


def _severity_rows(report):
    rows = [[CORRUPTION_LABELS[CLEAN], "-", 0]
            + [_num(report["ap"][m][CLEAN]) for m in report["models"]]]
    for c in CORRUPTIONS:
        for k, p in enumerate(report["corruptions"][c]["severities"]):
            fork = " (fork)" if k + 1 == FORK_SEVERITY else ""
            rows.append([CORRUPTION_LABELS[c], f"{p:g}", f"{k + 1}{fork}"]
                        + [_num(report["ap"][m][c][k]) for m in report["models"]])
    return rows


def robustness_markdown(source):
    """Markdown lines of a sweep (the report dict or its robustness.json): the image count,
    mPC / rPC per model overall and per corruption, AP per severity."""
    r = read_report(source)
    t = r.get("timing", {})
    parameters = "; ".join(f"{CORRUPTION_LABELS[c]}: {r['corruptions'][c]['parameter']} "
                           f"{' '.join(f'{p:g}' for p in r['corruptions'][c]['severities'])}"
                           for c in CORRUPTIONS)
    most = max(len(r["corruptions"][c]["severities"]) for c in CORRUPTIONS)
    fork = ", ".join(f"{CORRUPTION_LABELS[c]} {r['corruptions'][c]['fork_setting']:g}"
                     for c in CORRUPTIONS)
    lines = [HEADING, "",
             f"COCO-C style sweep of the first {r['num_images']} images of "
             f"`{r['data_type']}` ({r['images_evaluated']} evaluated, every model on the same "
             f"images; seed {r['seed']}, nothing random). mPC = mean AP over the corruptions "
             f"and their severities 1-{most}, rPC = mPC / clean AP (severity 0, the same "
             f"images). Severity {FORK_SEVERITY} is the fork's setting ({fork}). "
             f"{parameters}.", ""]
    header = ["model", "clean AP", "mPC", "rPC"]
    for c in CORRUPTIONS:
        header += [f"{CORRUPTION_LABELS[c]} mPC", f"{CORRUPTION_LABELS[c]} rPC"]
    lines += markdown(frame(_summary_rows(r), header)) + ["", "AP per severity:", ""]
    lines += markdown(frame(_severity_rows(r), ["corruption", "parameter", "severity"]
                            + [_label(r, m) for m in r["models"]]))
    if t.get("corrupted_images"):
        lines += ["", f"{t['corrupted_images']} corrupted images in {t['seconds']:.0f} s: "
                      f"{t['seconds_per_corrupted_image']:.2f} s each for "
                      f"{t.get('networks_per_image', 'n/a')} networks, the classifier and "
                      f"{len(r['models'])} decoded models."]
    return lines


def write_figure(source, path):
    """robustness.png: AP against severity (0 = clean), one panel per corruption, one line per
    model."""
    r = read_report(source)
    panels = {}
    for c in CORRUPTIONS:
        n = len(r["corruptions"][c]["severities"])
        series = {_label(r, m): (list(range(n + 1)), [r["ap"][m][CLEAN]] + list(r["ap"][m][c]))
                  for m in r["models"]}
        values = " ".join(f"{p:g}" for p in r["corruptions"][c]["severities"])
        panels[f"{CORRUPTION_LABELS[c]}: {r['corruptions'][c]['parameter']} {values}"] = {
            "ylabel": "keypoint AP", "series": series}
    plots.plot_curves(path, panels, f"{r['data_type']}, {r['images_evaluated']} images: AP "
                                    f"against severity ({FORK_SEVERITY} = the fork's setting)",
                      xlabel="severity (0 = clean)")
    return Path(path)


def load_robustness(eval_dir, notes):
    """The sweep the summary shows: under eval_dir, the one of the clean held-out set with
    the most images (any set's if none of it); None when there is none. A report that cannot
    be read becomes a note."""
    found = robustness_folders(eval_dir)
    found = [f for f in found if (f[2] / JSON_NAME).is_file()]
    if not found:
        return None
    preferred = [f for f in found if f[0] == EVAL_BASE] or found
    _, _, folder = max(preferred, key=lambda f: f[1])
    try:
        return read_report(folder)
    except UserError as e:
        notes.append(str(e))
        return None


def section_robustness(results):
    """The summary's section; empty when no sweep was run."""
    report = getattr(results, "robustness", None)
    return robustness_markdown(report) if report else []
