"""Model-free checks of the published Tables II-III (arXiv 2601.05399) by counting.

1. F1: with 200 normal + 200 abnormal queries, which F1 averagings admit an integer confusion
   matrix whose accuracy rounds to the printed Precision@1 (= accuracy of a top-1 label vote) and
   whose F1 rounds to the printed F1?
2. Precision@k: "fraction of the top k with the query's label" obeys fraction@k <= 1 - (1 - P@1)/k
   (a query whose top-1 has the other label has at most k-1 same-label items in its top k);
   "hit rate" (at least one same-label item in the top k) is nondecreasing in k and >= Accuracy@k
   (the paired item always has the query's label).
3. ROC AUC vs mAP: what AP does a score with the printed AUC give when the positive class is
   50 % of the items (binormal, equal variance, 200 vs 200)?  Prints mean and sd.

4. Candidates fixed by P@1 / Accuracy@1 alone (hard-vote AUC, AP floors of rare/common positives).

Run (from the repository root; needs the paper's tables, ../shared/paper/tables.json beside the checkout, or
CXR_MTCLIP_PAPER_TABLES): python scripts/paper_metric_evidence/arithmetic.py   (about 5 s; output summarised in
docs/metrics.md)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

import os

TABLES = Path(os.environ.get("CXR_MTCLIP_PAPER_TABLES",
                             Path(__file__).resolve().parents[3] / "shared" / "paper" / "tables.json"))
TAB = json.loads(TABLES.read_text())
T1 = TAB["table_I_cross_modal_retrieval_accuracy"]
COLS = {}
for d, key in (("image_to_text", "table_II_image_to_text_precision_by_binary_label"),
               ("text_to_image", "table_III_text_to_image_precision_by_binary_label")):
    for m, col in TAB[key].items():
        COLS[(m, d)] = dict(col, **{k: v for k, v in T1[d][m].items() if k.startswith("accuracy")})


def decimals(x: float) -> int:
    s = repr(x)
    return len(s.split(".")[1]) if "." in s else 0


def rounds_to(value: float, printed: float, dec: int) -> bool:
    return abs(value - printed) <= 0.5 * 10 ** -dec + 1e-12


def f1s(tp, fn, fp, tn):
    f_pos = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    f_neg = 2 * tn / (2 * tn + fp + fn) if tn + fp + fn else 1.0
    acc = (tp + tn) / (tp + fn + fp + tn)
    return {"binary (class 1 positive)": f_pos, "binary (class 0 positive)": f_neg,
            "macro": (f_pos + f_neg) / 2, "weighted (=macro, balanced)": (f_pos + f_neg) / 2,
            "micro (=accuracy)": acc}


def main() -> None:
    print("1. F1 vs Precision@1, integer confusion matrices over 200 + 200 queries")
    print("   (class 1 = whichever label the paper coded 1; a 'binary' match means errors split FN/FP as shown)")
    for (m, d), col in COLS.items():
        p1, f1 = col["precision@1"], col["f1"]
        dp, df = max(decimals(p1), 3), max(decimals(f1), 3)
        found = {}
        for tp in range(201):
            for tn in range(201):
                acc = (tp + tn) / 400
                if not rounds_to(acc, p1, dp):
                    continue
                for name, val in f1s(tp, 200 - tp, 200 - tn, tn).items():
                    if rounds_to(val, f1, df):
                        found.setdefault(name, []).append((tp, 200 - tp, 200 - tn, tn))
        print(f"  {m:>10} {d:<13} P@1={p1} F1={f1}:")
        for name in f1s(1, 1, 1, 1):
            sols = found.get(name, [])
            show = ", ".join(f"FN={fn} FP={fp}" for _, fn, fp, _ in sols[:4]) + (" ..." if len(sols) > 4 else "")
            print(f"      {name:<30} {'YES' if sols else 'no ':<4} {show}")

    print("\n2. Precision@k pattern (printed values are rounded: a printed value counts as above the bound only"
          " when it exceeds it by more than half a unit of the last digit)")
    for (m, d), col in COLS.items():
        p = [col[f"precision@{k}"] for k in (1, 3, 5, 10)]
        a = [col[f"accuracy@{k}"] for k in (1, 3, 5, 10)]
        mono = all(x <= y + 1e-12 for x, y in zip(p, p[1:]))
        ge = all(x >= y - 0.0005 for x, y in zip(p, a))
        # As a fraction of the top k, a query whose top-1 has the other label contributes at most
        # (k-1)/k, so fraction@k <= 1 - (1 - P@1)/k.
        broken = [f"k={k}: printed {pk} > bound {1 - (1 - p[0]) / k:.4f}"
                  for k, pk in zip((3, 5, 10), p[1:]) if pk - 0.0005 > 1 - (1 - p[0]) / k + 1e-12]
        print(f"  {m:>10} {d:<13} P@k={p} Acc@k={a} nondecreasing={mono} P>=Acc={ge}")
        print(f"      fraction reading impossible: {'; '.join(broken) if broken else 'no (bound respected)'}")

    print("\n3. AP expected for a score with the printed AUC, positive class = 50 % (binormal, 200 vs 200, 2000 draws)")
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200), np.ones(200)]
    for (m, d), col in COLS.items():
        auc = col["roc_auc"]
        shift = np.sqrt(2) * norm.ppf(auc)
        aps, aucs = [], []
        for _ in range(2000):
            x = rng.normal(size=400) + shift * y
            aucs.append(roc_auc_score(y, x))
            aps.append(average_precision_score(y, x))
        aps, aucs = np.array(aps), np.array(aucs)
        near = np.abs(aucs - auc) < 0.005
        print(f"  {m:>10} {d:<13} AUC={auc:<6} printed mAP={col['map']:<6} expected AP|AUC = "
              f"{aps[near].mean():.3f} ± {aps[near].std():.3f}   (z = {(col['map'] - aps[near].mean()) / aps[near].std():+.1f})")
    print("  For comparison, AP at AUC 0.5 is ~prevalence: a positive class of 95 % (top-1 correct) gives AP ~0.95,"
          "\n  of 6 % (top-1 wrong) ~0.06; only a ~50 % positive class gives AP ~0.5 at AUC ~0.5.")

    print("\n4. Candidates whose value is fixed by the printed P@1 / Accuracy@1, whatever the embeddings")
    print("   a) roc_auc_score(query label, top-1 retrieved label) = balanced accuracy of the top-1 vote"
          " = P@1 with 200/200 queries")
    print("   b) AP of any score when the positive class is 'top-1 has the query label' (prevalence P@1) or"
          " 'top-1 is the pair' (prevalence Acc@1): lower bound = AP with every positive ranked last")
    for (m, d), col in COLS.items():
        lo = []
        for name, prev in (("top-1 same label", col["precision@1"]), ("top-1 is the pair", col["accuracy@1"])):
            pos = int(round(prev * 400))
            neg = 400 - pos
            ap_min = np.mean([(i + 1) / (neg + i + 1) for i in range(pos)]) if pos else float("nan")
            lo.append(f"{name}: AP >= {ap_min:.3f}")
        print(f"  {m:>10} {d:<13} a) AUC would be {col['precision@1']:.3f} (printed {col['roc_auc']});"
              f"  b) {'; '.join(lo)} (printed mAP {col['map']})")


if __name__ == "__main__":
    main()
