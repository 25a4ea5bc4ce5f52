#!/usr/bin/env python3
"""Turn bench/models/results.json into docs/img/models-*.png and the evaluation section of
docs/models.md (between the EVALUATION markers). Run by evaluate.py; can be rerun alone."""
import json
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN, END = "<!-- EVALUATION BEGIN (bench/models/report.py) -->", "<!-- EVALUATION END -->"


def series(block, who, metric=None):
    eps = sorted(block["by_epsilon"], key=float)
    get = (lambda e: block["by_epsilon"][e][who]) if metric is None else (lambda e: block["by_epsilon"][e][metric])
    return [float(e) for e in eps], [get(e)["median"] for e in eps], [get(e)["q25"] for e in eps], [get(e)["q75"] for e in eps]


def by_eps(block):
    """(epsilon as a float, its results) for every epsilon of a block, in increasing order."""
    return sorted(((float(e), v) for e, v in block["by_epsilon"].items()), key=lambda t: t[0])


def eps_table(intro, columns, block, cells):
    """A paragraph, then a table with an epsilon column and a row per epsilon of `block`."""
    return ([intro, "", "| epsilon | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
            + [f"| {e:g} | " + " | ".join(cells(v)) + " |" for e, v in by_eps(block)])


def plot(path, title, ylabel, lines, hlines=(), goal=None, ylim=None):
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for label, (x, m, lo, hi), style in lines:
        ax.plot(x, m, style, label=label)
        ax.fill_between(x, lo, hi, alpha=0.2)
    for label, y, style in hlines:
        ax.axhline(y, linestyle=style, color="gray", linewidth=1)
        ax.text(0.1, y, " " + label, va="bottom", fontsize=8, color="gray")
    if goal is not None:
        ax.axhline(goal[1], linestyle=":", color="red", linewidth=1)
        ax.text(0.98, goal[1], goal[0] + " ", va="bottom", ha="right", fontsize=8, color="red", transform=ax.get_yaxis_transform())
    if ylim:
        ax.set_ylim(*ylim)          # diffprivlib's linear regression can blow up far below
    ax.set_xscale("log")
    ax.set_xlabel("epsilon")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fmt(s):
    return f"{s['median']:.3f} [{s['q25']:.3f}, {s['q75']:.3f}]"


def when(block):
    """When and how a block was measured (evaluate.py stamps every block it writes)."""
    m = (block or {}).get("measured")
    if not m:
        return "date not recorded"
    build = "release" if "release" in m.get("profilectl", "") else "debug"
    return f"{m['date']}, {m['runs']} run{'s' if m['runs'] != 1 else ''}, {build} build" + (f"; {m['note']}" if m.get("note") else "")


def measured(block):
    """The sentence a section's intro ends with."""
    m = (block or {}).get("measured")
    if not m:
        return " Measured: date not recorded."
    return f" Measured {when(block)}" + (f" (`{m['command']}`)." if m.get("command") else ".")


def at(block, e="1.0"):
    return (block or {}).get("by_epsilon", {}).get(e)


def at_epsilon_one(r):
    """Item 4 of issue 24: every model kind at epsilon 1, beside diffprivlib (where it has the
    model) and the non-private model."""
    rows = []
    def med(s):
        return f"{s['median']:.3f} [{s['q25']:.3f}, {s['q75']:.3f}]"
    for key, name in [("kmeans_bank", "kmeans, bank marketing"), ("kmeans_mall", "kmeans, Mall customers")]:
        v = at(r.get(key))
        if v:
            rows.append(f"| {name} | inertia / scikit-learn KMeans | {med(v['profilevault'])} | {med(v['diffprivlib'])} | 1 | {when(r.get(key))} |")
    v = at(r.get("logistic_bank"))
    if v:
        b = r["logistic_bank"]
        ours = v.get("profilevault_auc")
        dpl = v.get("diffprivlib_auc")
        if ours and dpl:
            rows.append(f"| logistic_regression, bank marketing | test AUC, mean [25th, 75th] | {ours['mean']:.3f} [{ours['q25']:.3f}, {ours['q75']:.3f}] | "
                        f"{dpl['mean']:.3f} [{dpl['q25']:.3f}, {dpl['q75']:.3f}] | {b['sklearn_auc']:.3f} | {when(b)} |")
        else:
            rows.append(f"| logistic_regression, bank marketing | test AUC / non-private | {med(v['profilevault'])} | {med(v['diffprivlib'])} | 1 ({b['sklearn_auc']:.3f}) | {when(b)} |")
    v = at(r.get("linear_retail"))
    if v:
        rows.append(f"| linear_regression, online retail (later spend) | R² / non-private ({r['linear_retail']['sklearn_r2']:.3f}) | {med(v['profilevault'])} | {med(v['diffprivlib'])} | 1 | {when(r.get('linear_retail'))} |")
    v = at(r.get("forest_bank"))
    if v:
        rows.append(f"| random_forest, bank marketing | test AUC | {med(v['profilevault'])} | {med(v['diffprivlib'])} (RandomForestClassifier) | {r['forest_bank']['sklearn_forest_auc']:.3f} (scikit-learn forest) | {when(r.get('forest_bank'))} |")
    v = at(r.get("rules_retail"))
    if v:
        if "recall" in v:
            prec = med(v["precision"]) if v.get("precision") else "- (no run released a rule)"
            rows.append(f"| association_rules, online retail | rules released; recall of the exact top 20; precision of what is released | "
                        f"{med(v['rules'])}; {med(v['recall'])}; {prec} | (none) | exact counts: {r['rules_retail']['exact_rules']} rules | {when(r.get('rules_retail'))} |")
        else:
            rows.append(f"| association_rules, online retail | share of the exact top 20 in the private top 20 | {med(v['precision'])} | (none) | 1 | {when(r.get('rules_retail'))} |")
    for key, name in [("recommender_retail", "recommender with a catalog, online retail"), ("recommender_retail_nocatalog", "recommender without a catalog, online retail")]:
        b = r.get(key)
        v = at(b)
        if v:
            cf = b.get("itemcf_cosine") or b["nonprivate_itemcf"]
            rows.append(f"| {name} | HR@10 (popularity {b['popularity']['hr']:.3f}) | {med(v['hr'])} | (none) | {cf['hr']:.3f} (item CF, cosine) | {when(b)} |")
    if not rows:
        return []
    return ["**Every model kind at epsilon 1** (median [25th, 75th percentile] over the runs unless said; `segments` is "
            "k-means' release without iterations and has no separate evaluation):", "",
            "| model, data | metric | ProfileVault | diffprivlib 0.6.6 | non-private | measured |", "|---|---|---|---|---|---|"] + rows + [""]


def recommender_split(r):
    """The time-split recommender evaluation, with and without a catalog (issue 24, item 2)."""
    out = []
    for key, name in [("recommender_retail", "with the catalog"), ("recommender_retail_nocatalog", "without a catalog (item selection)")]:
        b = r.get(key)
        if not b or "itemcf_cosine" not in b:
            continue
        cf, pop = b["itemcf_cosine"], b["popularity"]
        out += [f"**Recommender {name}, time split** ({b.get('split', '')}; {b['test_customers']} test customers; job params "
                f"`{json.dumps(b['params'])}`, `events_since: {b['events_since']}`). Non-private baselines on the same split: popularity "
                f"HR@10 {pop['hr']:.3f} NDCG@10 {pop['ndcg']:.3f}; item-based CF (cosine, numpy) HR@10 {cf['hr']:.3f} NDCG@10 {cf['ndcg']:.3f}. "
                f"Goal at epsilon 1: above popularity and at least 0.8 of item CF.{measured(b)}", "",
                "| epsilon | HR@10 | NDCG@10 | HR / item CF | NDCG / item CF | vocabulary | goal at 1 |", "|---|---|---|---|---|---|---|"]
        for e, v in by_eps(b):
            goal = ""
            if e == 1:
                ok = all(v[m]["median"] > pop[m] and v[m]["median"] >= 0.8 * cf[m] for m in ("hr", "ndcg"))
                goal = "met" if ok else "NOT met"
            voc = fmt(v["vocabulary"]) if "vocabulary" in v else ""
            out.append(f"| {e:g} | {fmt(v['hr'])} | {fmt(v['ndcg'])} | {v['hr']['median'] / cf['hr']:.2f} | {v['ndcg']['median'] / cf['ndcg']:.2f} | {voc} | {goal} |")
        out.append("")
    return out


def selection_sweep(r):
    b = r.get("selection_sweep_retail")
    if not b:
        return []
    out = [f"**Item selection: how the defaults were chosen** (recommender without a catalog, online retail, time split; "
           f"{b['runs']} runs per cell; job params `{json.dumps(b['params'])}` plus the two below). The choice maximises the mean, "
           f"over epsilon {', '.join(f'{e:g}' for e in b['epsilons'])}, of the median NDCG@10 as a share of the best at that epsilon: "
           f"**selection_items {b['best']['selection_items']}, selection_share {b['best']['selection_share']}**.{measured(b)}", "",
           "| epsilon | selection_items (k) | selection_share | vocabulary | HR@10 | NDCG@10 |", "|---|---|---|---|---|---|"]
    for g in b["grid"]:
        out.append(f"| {g['epsilon']:g} | {g['selection_items']} | {g['selection_share']} | {g['vocabulary']['median']:.0f} | {fmt(g['hr'])} | {fmt(g['ndcg'])} |")
    return out + [""]


def logistic_detail(r):
    b = r.get("logistic_bank")
    if not b or "sklearn_log_loss" not in b:
        return []
    out = [f"**Logistic regression, bank marketing: spread and calibration** ({b['train']:,} training, {b['test']:,} test customers; "
           f"rate of y = 1 in the test rows {b['test_rate']:.3f}; non-private AUC {b['sklearn_auc']:.3f}, log loss {b['sklearn_log_loss']:.4f}).{measured(b)}", "",
           "| epsilon | model | AUC mean | AUC 25th-75th (spread) | log loss mean |", "|---|---|---|---|---|"]
    for e, v in by_eps(b):
        for who, name in [("profilevault", "ProfileVault"), ("diffprivlib", "diffprivlib 0.6.6")]:
            a, ll = v.get(f"{who}_auc"), v.get(f"{who}_log_loss")
            if a:
                out.append(f"| {e:g} | {name} | {a['mean']:.4f} | {a['q25']:.4f}-{a['q75']:.4f} ({a['iqr']:.4f}) | {ll['mean']:.4f} |")
    v = at(b)
    if v and v.get("profilevault_reliability"):
        out += ["", "Reliability at epsilon 1 (first run; predicted probability bins: rows, mean predicted, observed rate):", "",
                "| bin | ProfileVault | diffprivlib 0.6.6 | non-private |", "|---|---|---|---|"]
        def cell(table, lo):
            for t in table or []:
                if abs(t["bin"][0] - lo) < 1e-9:
                    return f"{t['rows']}: {t['predicted']:.3f} / {t['observed']:.3f}"
            return "-"
        for i in range(10):
            lo = i / 10
            out.append(f"| {lo:.1f}-{lo + 0.1:.1f} | {cell(v['profilevault_reliability'], lo)} | {cell(v['diffprivlib_reliability'], lo)} | {cell(b['sklearn_reliability'], lo)} |")
    return out + [""]


def main():
    res_path = os.path.join(ROOT, "bench", "models", "results.json")
    with open(res_path) as f:
        r = json.load(f)
    img = os.path.join(ROOT, "docs", "img")
    os.makedirs(img, exist_ok=True)
    md = [BEGIN, "", "Measured by `bench/models/evaluate.py` (median [25th, 75th percentile] over the runs; raw figures in "
          "`bench/models/results.json`). The tables come from several runs of it: each row or section says when it was "
          "measured, with how many runs per epsilon, on which build and with which command.", ""]
    rows = []
    for key, title, goal in [("kmeans_bank", "k-means, bank marketing", 1.2), ("kmeans_mall", "k-means, Mall customers", None)]:
        if key not in r:
            continue
        b = r[key]
        plot(os.path.join(img, f"models-{key}.png"), f"{title}: n={b['subjects']}, d={len(b['features'])}, k={b['k']}",
             "inertia / scikit-learn (n_init=10)",
             [("ProfileVault", series(b, "profilevault"), "o-"), ("diffprivlib 0.6.6", series(b, "diffprivlib"), "s--")],
             hlines=[("non-private", 1.0, "-")], goal=("goal at eps 1", goal) if goal else None)
        for e, v in by_eps(b):
            rows.append(f"| {title} ({', '.join(b['features'])}; k = {b['k']}) | {float(e):g} | inertia ratio | {fmt(v['profilevault'])} | {fmt(v['diffprivlib'])} | {'<= 1.2 at eps 1, below diffprivlib' if goal and float(e) == 1 else ''} | {when(b)} |")
    if "logistic_bank" in r:
        b = r["logistic_bank"]
        plot(os.path.join(img, "models-logistic_bank.png"), f"logistic regression of y, bank marketing (test AUC {b['sklearn_auc']:.3f} non-private)",
             "test AUC / non-private", [("ProfileVault", series(b, "profilevault"), "o-"), ("diffprivlib 0.6.6", series(b, "diffprivlib"), "s--")],
             hlines=[("non-private", 1.0, "-")], goal=("goal at eps 1", 0.95))
        for e, v in by_eps(b):
            rows.append(f"| logistic regression of y, bank marketing ({len(b['features'])} features) | {float(e):g} | test AUC / non-private ({b['sklearn_auc']:.3f}) | {fmt(v['profilevault'])} | {fmt(v['diffprivlib'])} | {'>= 0.95, above diffprivlib' if float(e) == 1 else ''} | {when(b)} |")
    for lkey in ["linear_retail", "linear_retail_2f"]:
        if lkey not in r:
            continue
        b = r[lkey]
        plot(os.path.join(img, f"models-{lkey}.png"), f"linear regression of later spend from {' and '.join(b['features'])} (R² {b['sklearn_r2']:.3f} non-private)",
             "R² / non-private", [("ProfileVault", series(b, "profilevault"), "o-"), ("diffprivlib 0.6.6", series(b, "diffprivlib"), "s--")],
             hlines=[("non-private", 1.0, "-")], goal=("goal at eps 1", 0.9), ylim=(-0.5, 1.1))
        for e, v in by_eps(b):
            rows.append(f"| linear regression of {b['target']}, online retail ({', '.join(b['features'])}) | {float(e):g} | R² / non-private ({b['sklearn_r2']:.3f}); min over runs: ours {v['profilevault']['min']:.3f}, diffprivlib {v['diffprivlib']['min']:.3g} | {fmt(v['profilevault'])} | {fmt(v['diffprivlib'])} | {'>= 0.9, no blow-up' if float(e) == 1 else 'no blow-up'} | {when(b)} |")
    if "recommender_retail" in r:
        b = r["recommender_retail"]
        x, hr, hlo, hhi = series(b, None, "hr")
        _, nd, nlo, nhi = series(b, None, "ndcg")
        plot(os.path.join(img, "models-recommender_retail.png"), f"recommender, online retail ({b['test_customers']} test customers)",
             "HR@10", [("ProfileVault HR@10", (x, hr, hlo, hhi), "o-")],
             hlines=[("popularity", b["popularity"]["hr"], "--"), ("non-private item CF", b["nonprivate_itemcf"]["hr"], "-")]
             + ([("popularity since " + b["events_since"], b["recent_popularity"]["hr"], ":")] if b.get("recent_popularity") and b.get("events_since") else []),
             goal=("0.8 of non-private item CF", 0.8 * b["nonprivate_itemcf"]["hr"]))

        def base(metric):
            t = f"popularity {b['popularity'][metric]:.3f}, non-private item CF {b['nonprivate_itemcf'][metric]:.3f}"
            if b.get("recent_popularity") and b.get("events_since"):
                t += f"; for reference: popularity since {b['events_since']} {b['recent_popularity'][metric]:.3f}, this model non-private {b['nonprivate_same_model'][metric]:.3f}"
            return t
        for e, v in by_eps(b):
            for metric, name in [("hr", "HR@10"), ("ndcg", "NDCG@10")]:
                goal = ""
                if float(e) == 1:
                    m, worst = v[metric]["median"], v[metric]["min"]
                    bar = 0.8 * b["nonprivate_itemcf"][metric]
                    met = m > b["popularity"][metric] and m >= bar
                    goal = f"above popularity, >= 0.8 of non-private ({bar:.3f}): {'met' if met else 'NOT met'} (ratio {m / b['nonprivate_itemcf'][metric]:.3f}, worst run {worst:.3f})"
                rows.append(f"| recommender, online retail: {name} | {float(e):g} | {base(metric)} | {fmt(v[metric])} | (no recommender) | {goal} | {when(b)} |")
    md += ["| model and data | epsilon | metric (baseline) | ProfileVault | diffprivlib 0.6.6 | goal | measured |", "|---|---|---|---|---|---|---|"] + rows + [""]
    md += at_epsilon_one(r)
    md += recommender_split(r)
    md += selection_sweep(r)
    md += logistic_detail(r)
    for rkey, rname in [("rules_retail", "with the catalog"), ("rules_retail_nocatalog", "without a catalog (item selection)")]:
        if rkey not in r or (rkey == "rules_retail_nocatalog" and "recall" not in (at(r[rkey]) or {})):
            continue
        b = r[rkey]
        if "recall" in (at(b) or {}):
            md += eps_table(
                f"**Association rules {rname}, online retail** ({b.get('subjects') or 0:,.0f} customers, all purchases to 2011-09-30; job params "
                f"`{json.dumps(b['params'])}`): the top {b['top']} rules by lift against the same recipe from exact counts with the catalog "
                f"({b['exact_rules']} rules). Recall: the share of the exact top {b['top']} that the private top {b['top']} holds (0 when "
                f"nothing is released). Precision: the share of the private top {b['top']} that exact counts also give, over the runs "
                f"that released a rule (how many in brackets). diffprivlib has no association rules.{measured(b)}",
                ["rules released", "vocabulary", f"recall of the top {b['top']}", "precision (runs with rules)", "median relative lift error (rules in both)"], b,
                lambda v: [fmt(v["rules"]), fmt(v["vocabulary"]), fmt(v["recall"]),
                           f"{fmt(v['precision'])} ({v['precision']['runs']})" if v.get("precision") else "- (0)",
                           fmt(v["lift_error"]) if v.get("lift_error") else "-"])
        else:
            md += eps_table(
                f"**Association rules, online retail** ({b.get('subjects') or 0:,.0f} customers, all purchases to 2011-09-30; job params "
                f"`{json.dumps(b['params'])}`): the top {b['top']} rules by lift against the same recipe from exact counts "
                f"({b['exact_rules']} rules); diffprivlib has no association rules.{measured(b)}",
                ["rules released", "share of the exact top 20 in the private top 20", "median relative lift error (rules in both)"], b,
                lambda v: [fmt(v["rules"]), fmt(v["precision"]), fmt(v["lift_error"]) if v.get("lift_error") else "-"])
        if rkey != "rules_retail":
            md.append("")
            continue
        md += ["", "Top rules from exact counts, and one run at epsilon 10:", "",
               "| rule (exact) | support | confidence | lift |", "|---|---|---|---|"]
        for x in b["exact_top"][:6]:
            md.append(f"| {' + '.join(x['antecedent'])} -> {x['consequent']} | {x['support']:.0f} | {x['confidence']:.2f} | {x['lift']:.1f} |")
        ex = (b["by_epsilon"].get("10.0") or {}).get("example_top") or []
        if ex:
            md += ["", "| rule (epsilon 10) | noisy support | confidence (exact) | lift (exact) |", "|---|---|---|---|"]
            for x in ex[:6]:
                ec = f" ({x['exact_confidence']:.2f})" if x.get("exact_confidence") is not None else " (not an exact rule)"
                el = f" ({x['exact_lift']:.1f})" if x.get("exact_lift") is not None else ""
                md.append(f"| {' + '.join(x['antecedent'])} -> {x['consequent']} | {x['support']:.0f} | {x['confidence']:.2f}{ec} | {x['lift']:.1f}{el} |")
        md.append("")
    if "segment_recommender_retail" in r:
        b = r["segment_recommender_retail"]
        top = ", ".join(f"{k} {v}" for k, v in b.get("test_customers_by_segment", {}).items())
        md += eps_table(
            f"**Segment-based recommendations, online retail** (segments: {b['segments']}; {b['test_customers']} test customers, "
            f"the largest segments: {top}; job params `{json.dumps(b['params'])}`, `events_since: {b['events_since']}`): the recommender "
            f"with `by: {b['segments']}` against the same job without it, same runs. Non-private popularity within the customer's "
            f"{b['segments']} (same window): HR@10 {b['nonprivate_segment_popularity']['hr']:.3f}, NDCG@10 "
            f"{b['nonprivate_segment_popularity']['ndcg']:.3f}.{measured(b)}",
            ["segment-based HR@10", "item-based HR@10", "segment-based NDCG@10", "item-based NDCG@10"], b,
            lambda v: [fmt(v["segment"]["hr"]), fmt(v["item_based"]["hr"]), fmt(v["segment"]["ndcg"]), fmt(v["item_based"]["ndcg"])]) + [""]
    if "forest_bank" in r:
        b = r["forest_bank"]
        md += eps_table(
            f"**Random forest, bank marketing** (propensity of `y`; {b['train']:,} training and {b['test']:,} test customers; "
            f"features {', '.join(b['features'])}; job params `{json.dumps(b['params'])}`, diffprivlib's RandomForestClassifier with "
            f"the same trees and depth and the schema's bounds): AUC on the test customers; scikit-learn's forest (100 trees, "
            f"non-private) {b['sklearn_forest_auc']:.3f}.{measured(b)}",
            ["ProfileVault random_forest", "ProfileVault logistic_regression", "diffprivlib 0.6.6 RandomForestClassifier"], b,
            lambda v: [fmt(v["profilevault"]), fmt(v["profilevault_logistic"]), fmt(v["diffprivlib"])]) + [""]
    if "mf_recommender_retail" in r:
        b = r["mf_recommender_retail"]
        names = {"matrix_factorization": f"matrix factorisation (factors {b['factors']}, 20% of epsilon on co-occurrence)",
                 "item_based_cooccurrence": "item-based, same 20% on co-occurrence (thresholded)",
                 "item_based_default": "item-based default (all on popularity, content from the catalog)"}
        md += [f"**Matrix factorisation recommender, online retail** ({b['test_customers']} test customers; job params "
               f"`{json.dumps(b['params'])}`, `events_since: {b['events_since']}`): the co-occurrence projected on its top "
               f"{b['factors']} eigenvectors (McSherry & Mironov) against the thresholded item-based similarities from the same "
               f"release, same runs. The same factorisation of exact counts: HR@10 {b['nonprivate_mf']['hr']:.3f}, NDCG@10 "
               f"{b['nonprivate_mf']['ndcg']:.3f}.{measured(b)}", "",
               "| epsilon | model | HR@10 | NDCG@10 |", "|---|---|---|---|"]
        for e, models in by_eps(b):
            for n, v in models.items():
                md.append(f"| {e:g} | {names.get(n, n)} | {fmt(v['hr'])} | {fmt(v['ndcg'])} |")
        md.append("")
    for key in ["kmeans_bank", "kmeans_mall", "logistic_bank", "linear_retail", "linear_retail_2f", "recommender_retail"]:
        if key in r:
            md.append(f"![{key}](img/models-{key}.png)")
    md += ["", END]
    doc = os.path.join(ROOT, "docs", "models.md")
    with open(doc) as f:
        text = f.read()
    block = "\n".join(md)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Evaluation on real data\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(text)
    print(f"report: wrote docs/img/models-*.png and the evaluation section of docs/models.md", file=sys.stderr)


if __name__ == "__main__":
    main()
