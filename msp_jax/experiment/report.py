"""The experiment's report from `results.json` alone (nothing is recomputed): `report.md`, a self-contained
`report.html` (its PNG plots embedded as data URIs) and the plots as files under `plots/`.

Plots (matplotlib, Agg backend): per-domain bars of the main score with std error bars; diversity (Distinct@2)
against correctness per generated method; the yield funnel generated -> parsed -> candidates -> kept per
generated method; the mixer ablation.
"""

from __future__ import annotations

import base64
import html
import io
import pathlib

from msp_jax import files
from msp_jax.evaluation.compare import SCORE_TITLES

PLOTS_DIR = "plots"


def _fmt(stats: dict | None) -> str:
  return "–" if not stats else f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def _num(value, digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def _interval(comparison: dict) -> str:
  """A paired comparison's 95% interval, '[low, high]' in signed points."""
  return f"[{comparison['low']:+.2f}, {comparison['high']:+.2f}]"


def _loss(training: dict | None) -> str:
  """'first → best' prompt dev loss of a row that trained prompts, '–' for the others."""
  if not training or training.get("best_dev_loss") is None:
    return "–"
  return f"{_num(training.get('first_dev_loss'), 2)} → {_num(training['best_dev_loss'], 2)}"


def _oracle_reference(oracle: dict | None) -> str:
  if not oracle or oracle["test_reproduced"] is None:
    return ""
  return f" (on the real test examples it reproduces {oracle['test_reproduced']:.1f}%)"


def _noise_table(name: str, entry: dict, generated: list[tuple[str, dict]]) -> tuple:
  """The label-noise indicators (`synthesis.label_noise`) of each generated row beside the seed set's."""
  digits = {"template_leak": 1, "degenerate_span": 1, "unlabelled_capitalised": 2}  # percent, percent, count
  sets = [("seed set", entry.get("seed_label_noise") or {})]
  sets += [(title, g.get("label_noise", {})) for title, g in generated]
  rows = [[title, *[_num(noise.get(k), d) for k, d in digits.items()]] for title, noise in sets]
  note = ("Counted on the kept sets without a model (`msp_jax/synthesis/label_noise.py`), means over generation "
          "seeds. Template leak: % of texts carrying the prompt's markup (an intents section, an exemplar "
          "number, a line break, an HTML character reference). Degenerate span: % of examples with a span that "
          "is a pronoun or a label's own name. Unlabelled capitalised: capitalised word runs outside every span, "
          "per example (in NER data mostly entities left unlabelled).")
  return (f"{name}: label-noise indicators", ["set", "template leak %", "degenerate span %",
                                              "unlabelled capitalised / example"], rows, note)


def tables(results: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
  """(title, header, rows, note) of every table of the report."""
  out = []
  for name, entry in results["domains"].items():
    names = entry["score_names"]
    header = ["method", "runs", *[SCORE_TITLES.get(n, n) + (" (main)" if n == entry["main_score"] else "")
                                  for n in names], "validation (selection)"]
    rows = [[row["title"], str(len(row["runs"])), *[_fmt(row["scores"].get(n)) for n in names],
             _fmt(row.get("validation"))] for row in entry["rows"].values()]
    sizes = entry["sizes"]
    note = (f"{entry['protocol']}. {sizes['seed']} seed, {sizes['validation']} validation, {sizes['test']} test "
            f"examples; synthetic sets of {entry['synthetic_target']}. Mean ± std over generation seeds x "
            "downstream repeats, percent. Validation (selection): the score each model was selected on, on the "
            "validation split, where settings are to be compared (– where the runs predate its recording).")
    oracle = entry.get("oracle")
    if oracle:
      scores = ", ".join(f"{SCORE_TITLES.get(n, n)} {oracle['scores'][n]:.1f}" for n in names)
      note += (f" Reference, not a method: the same task model trained on every non-test example "
               f"({oracle['train_examples']}, the oracle) scores {scores} on this test split.")
    out.append((f"{name}: downstream scores", header, rows, note))
    generated = [(row["title"], row["generated"]) for row in entry["rows"].values() if "generated" in row]
    if generated:
      losses = {row["title"]: _loss(row.get("prompt_training")) for row in entry["rows"].values()}
      header = ["method", "distinct-1", "distinct-2", "distinct-3", "correctness %", "perplexity",
                "prompt dev loss (first → best)", "generated", "parsed", "candidates", "kept",
                "dropped (reason: count)"]
      rows = [[title, *[_num(g["distinct"][f"distinct_{k}"]) for k in (1, 2, 3)], _num(g["correctness"], 1),
               _num(g["perplexity"], 1), losses[title],
               *[str(g["funnel"][k]) for k in ("generated", "parsed", "candidates", "kept")],
               ", ".join(f"{k}: {v}" for k, v in sorted(g["dropped"].items()) if v)] for title, g in generated]
      seed = generated[0][1]
      note = (f"Distinct@k on equal-size samples ({_num(seed['sample_size'], 0)} texts; the seed set's own: "
              f"{' / '.join(_num(seed['seed_distinct'][f'distinct_{k}']) for k in (1, 2, 3))}); correctness: share "
              f"of kept examples whose labels the oracle model ({sizes['oracle_train']} non-test examples) "
              f"reproduces{_oracle_reference(entry.get('oracle'))}; perplexity under the backbone (seed set: "
              f"{_num(seed['seed_perplexity'], 1)}); prompt dev loss: the prompt-training loss on held-out seed "
              "examples at the first evaluation and the best one (rows that train prompts; the others sample from "
              "theirs). Funnel counts are summed over generation seeds.")
      out.append((f"{name}: generated data", header, rows, note))
      out.append(_noise_table(name, entry, generated))
    if entry["comparisons"]:
      header = ["method", "baseline", "difference", "95% interval", "includes 0"]
      titles = {k: row["title"] for k, row in entry["rows"].items()}
      rows = [[titles[c["method"]], titles[c["baseline"]], f"{c['difference']:+.2f}",
               _interval(c), "yes" if c["includes_zero"] else "no"]
              for c in entry["comparisons"]]
      first = entry["comparisons"][0]
      note = (f"Paired bootstrap over the {first['examples']} test examples ({first['samples']} resamples, seed "
              f"{first['seed']}) of the {SCORE_TITLES.get(first['score'], first['score'])} difference, each side "
              "averaged over its runs. Where the interval includes 0, the data do not show a difference.")
      out.append((f"{name}: paired differences", header, rows, note))
  ablation = results.get("ablation")
  if ablation and ablation["domain"] in results["domains"]:
    out.append(_ablation_table(ablation, results["domains"][ablation["domain"]]))
  if results.get("cells"):
    out.append(_wall_time_table(results))
  return out


def _ablation_table(ablation: dict, entry: dict) -> tuple:
  """Each mixer's downstream scores beside what explains them: the selection score on validation, the prompts'
  dev loss, the kept data's correctness and diversity, and the paired difference from the experiment's mixer."""
  names, main = entry["score_names"], entry["main_score"]
  versus = {c["method"]: c for c in entry["comparisons"] if c["baseline"] == entry["msp_row"]}
  rows = []
  for name in (r for r in ablation["rows"] if r in entry["rows"]):
    row = entry["rows"][name]
    generated = row.get("generated") or {}
    c = versus.get(name)
    difference = ("(reference)" if name == entry["msp_row"] else
                  "–" if c is None else f"{c['difference']:+.2f} {_interval(c)}")
    rows.append([row["mixer"], str(len(row["runs"])), *[_fmt(row["scores"].get(n)) for n in names],
                 _fmt(row.get("validation")), _loss(row.get("prompt_training")),
                 _num(generated.get("correctness"), 1), _num((generated.get("distinct") or {}).get("distinct_2")),
                 difference])
  header = ["mixer", "runs", *[SCORE_TITLES.get(n, n) for n in names], "validation (selection)",
            "prompt dev loss (first → best)", "correctness %", "distinct-2",
            f"{SCORE_TITLES.get(main, main)} vs {entry['rows'][entry['msp_row']]['mixer']} (95% interval)"
            if entry["msp_row"] in entry["rows"] else "difference"]
  note = ("seed + MSP with each mixer (same seeds, backbone, sampling and denoiser); mean ± std over generation "
          "seeds x downstream repeats, percent. A mixer is chosen on the validation column; the test difference "
          "is a paired bootstrap over test examples. Prompt dev loss: the prompt-training loss on the held-out "
          "seed examples at the first evaluation and at the best one.")
  return (f"mixer ablation ({ablation['domain']})", header, rows, note)


def _wall_time_table(results: dict) -> tuple:
  """Seconds of each stage kind summed over each domain's cells (and its oracle reference), with totals."""
  domains = list(dict.fromkeys(c["domain"] for c in results["cells"]))
  seconds: dict[str, dict[str, float]] = {}
  for c in results["cells"]:
    for stage, value in c["seconds"].items():
      if value is not None:
        seconds.setdefault(stage, {}).setdefault(c["domain"], 0.0)
        seconds[stage][c["domain"]] += value
  for name in domains:
    oracle = (results["domains"].get(name) or {}).get("oracle") or {}
    if oracle.get("seconds") is not None:
      seconds.setdefault("oracle", {})[name] = oracle["seconds"]
  hours = lambda value: f"{value / 3600:.2f}"  # noqa: E731
  rows = [[stage, *[hours(per.get(d, 0.0)) for d in domains], hours(sum(per.values()))]
          for stage, per in seconds.items()]
  totals = [sum(per.get(d, 0.0) for per in seconds.values()) for d in domains]
  rows.append(["all stages", *[hours(t) for t in totals], hours(sum(totals))])
  note = ("Hours of each stage as recorded in results.json (`cells[].seconds`, the oracle's in "
          "`domains[].oracle.seconds`), summed over cells. A stage that was interrupted counts only its finished "
          "run; time spent paused or sharing the CPU with other work while a stage ran is included.")
  return ("wall time (hours)", ["stage", *domains, "total"], rows, note)


def plots(results: dict) -> dict[str, bytes]:
  """file name -> PNG bytes of every plot (module docstring)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top

  def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()

  out = {}
  domains = list(results["domains"].items())
  if not domains:
    return out
  fig, axes = plt.subplots(1, len(domains), figsize=(5.2 * len(domains), 4.2), squeeze=False)
  for ax, (name, entry) in zip(axes[0], domains):
    rows = [(row["title"], row["scores"].get(entry["main_score"])) for row in entry["rows"].values()]
    rows = [(t, s) for t, s in rows if s]
    ax.bar(range(len(rows)), [s["mean"] for _, s in rows], yerr=[s["std"] for _, s in rows], capsize=4,
           color="#4C72B0")
    ax.set_xticks(range(len(rows)), [t.replace("seed + ", "+") for t, _ in rows], rotation=35, ha="right")
    ax.set_title(name)
    ax.set_ylabel(SCORE_TITLES.get(entry["main_score"], entry["main_score"]) + " (%)")
  out["scores.png"] = png(fig)

  fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
  markers = "osD^v<>p*"
  # One colour per method and one marker per domain, named in a legend (labels beside the points overlap).
  methods = list(dict.fromkeys(row["title"].replace("seed + ", "") for _, e in domains
                               for row in e["rows"].values() if "generated" in row))
  colour = {method: f"C{k % 10}" for k, method in enumerate(methods)}
  for i, (name, entry) in enumerate(domains):
    for title, g in ((row["title"], row["generated"]) for row in entry["rows"].values() if "generated" in row):
      if g["correctness"] is not None:
        axes[0].scatter(g["distinct"]["distinct_2"], g["correctness"], marker=markers[i % len(markers)], s=50,
                        color=colour[title.replace("seed + ", "")])
  handles = [Line2D([], [], marker="o", linestyle="", color=colour[m], label=m) for m in methods]
  handles += [Line2D([], [], marker=markers[i % len(markers)], linestyle="", color="grey", label=name)
              for i, (name, _) in enumerate(domains)]
  axes[0].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  axes[0].set_xlabel("Distinct@2 (equal-size sample)")
  axes[0].set_ylabel("correctness (%)")
  axes[0].set_title("diversity vs correctness")
  stages = ("generated", "parsed", "candidates", "kept")
  labels, width = [], 0.8 / len(stages)
  for j, (label, funnel) in enumerate((f"{n}: {row['title'].replace('seed + ', '')}", row["generated"]["funnel"])
                                      for n, e in domains for row in e["rows"].values() if "generated" in row):
    labels.append(label)
    for k, stage in enumerate(stages):
      axes[1].bar(j + k * width, funnel[stage], width, color=f"C{k}", label=stage if j == 0 else None)
  axes[1].set_xticks([j + 0.3 for j in range(len(labels))], labels, rotation=40, ha="right", fontsize=7)
  axes[1].set_title("yield funnel")
  axes[1].set_ylim(0, 1.2 * axes[1].get_ylim()[1])  # headroom: the legend sits above the tallest bars
  axes[1].legend(fontsize=7, ncol=len(stages), loc="upper center")
  out["generated.png"] = png(fig)

  ablation = results.get("ablation")
  if ablation and ablation["domain"] in results["domains"]:
    entry = results["domains"][ablation["domain"]]
    rows = [(entry["rows"][r]["mixer"], entry["rows"][r]["scores"].get(entry["main_score"]),
             entry["rows"][r].get("validation")) for r in ablation["rows"] if r in entry["rows"]]
    rows = [(m, test, validation) for m, test, validation in rows if test]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (label, colour) in enumerate((("test", "#55A868"), ("validation (selection)", "#8172B2"))):
      bars = [(j, stats[k + 1]) for j, stats in enumerate(rows) if stats[k + 1]]
      ax.bar([j + 0.4 * k for j, _ in bars], [s["mean"] for _, s in bars], 0.4, yerr=[s["std"] for _, s in bars],
             capsize=3, color=colour, label=label)
    ax.set_xticks([j + 0.2 for j in range(len(rows))], [m for m, _, _ in rows])
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"mixer ablation, {ablation['domain']}")
    ax.set_ylabel(SCORE_TITLES.get(entry["main_score"], entry["main_score"]) + " (%)")
    out["ablation.png"] = png(fig)
  return out


def _headline(results: dict) -> list[str]:
  lines = []
  for name, entry in results["domains"].items():
    for c in entry["comparisons"]:
      if c["method"] == entry["msp_row"]:
        verdict = "includes 0: no difference shown" if c["includes_zero"] else "excludes 0"
        lines.append(f"{name}: {entry['rows'][c['method']]['title']} - {entry['rows'][c['baseline']]['title']} = "
                     f"{c['difference']:+.2f} points, 95% interval {_interval(c)} ({verdict})")
  if results.get("missing"):
    missing = results["missing"]
    more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
    lines.append(f"{len(missing)} cell(s) not finished: {', '.join(missing[:6])}{more}")
  return lines


def markdown(results: dict) -> str:
  parts = ["# msp experiment report", ""]
  if results.get("command"):
    parts += [f"Command: `{results['command']}`", ""]
  parts += [f"- {line}" for line in _headline(results)] + [""]
  for title, header, rows, note in tables(results):
    parts += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    parts += ["| " + " | ".join(r) + " |" for r in rows]
    parts += ["", note, ""]
  parts += [f"![{name}]({PLOTS_DIR}/{name})" for name in plots_order(results)] + [""]
  return "\n".join(parts)


def plots_order(results: dict) -> list[str]:
  names = ["scores.png", "generated.png"]
  return names + (["ablation.png"] if results.get("ablation") else [])


def html_page(results: dict, images: dict[str, bytes]) -> str:
  e = html.escape
  body = ["<h1>msp experiment report</h1>"]
  if results.get("command"):
    body.append(f"<p>Command: <code>{e(results['command'])}</code></p>")
  body.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in _headline(results)) + "</ul>")
  for title, header, rows, note in tables(results):
    body.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
    body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
    body.append(f"</table><p class='note'>{e(note)}</p>")
  for name, data in images.items():
    body.append(f"<figure><img alt='{e(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
                f"<figcaption>{e(name)}</figcaption></figure>")
  style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:"
           "collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,"
           "th:first-child{text-align:left}.note{color:#555;font-size:90%}img{max-width:100%}")
  return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>msp experiment report</title><style>{style}"
          f"</style></head><body>{''.join(body)}</body></html>\n")


def render(results: dict, out_dir: str | pathlib.Path) -> dict[str, pathlib.Path]:
  """Writes report.md, report.html and plots/*.png under `out_dir` (atomically); returns their paths."""
  out_dir = pathlib.Path(out_dir)
  images = plots(results)
  written = {}
  for name, data in images.items():
    path = out_dir / PLOTS_DIR / name
    with files.atomic_path(path) as temporary:
      temporary.write_bytes(data)
    written[name] = path
  files.atomic_write_text(out_dir / "report.md", markdown(results))
  files.atomic_write_text(out_dir / "report.html", html_page(results, images))
  written["report.md"], written["report.html"] = out_dir / "report.md", out_dir / "report.html"
  return written
