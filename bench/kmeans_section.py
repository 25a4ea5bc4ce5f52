"""The k-means section of docs/benchmarks.md (bench/report.py writes it; bench/models/kmeans_1m.py
rewrites it in place after a k-means run)."""

def kmeans_lines(k):
    if not k:
        return ["## k-means against diffprivlib", "", "Not measured in this run: `bench/models/.venv/bin/python bench/models/kmeans_1m.py`.", ""]
    return ["## k-means against diffprivlib", "",
            f"{k['subjects']:,} subjects x {k['features']} attributes, k = {k['k']}, epsilon {k['epsilon']:g}, medians of {k['runs']} runs "
            f"(`bench/models/kmeans_1m.py`, {k['date']}); inertia as a ratio to scikit-learn KMeans (n_init=10, {k['sklearn_seconds']:.1f} s).", "",
            "| | seconds | inertia ratio |", "|---|---|---|",
            f"| ProfileVault, end to end from the store (`profilectl train`, process wall time) | {k['profilevault_seconds']:.2f} | {k['profilevault_ratio']:.3f} |",
            f"| diffprivlib 0.6.6 KMeans, data in memory (fit only) | {k['diffprivlib_seconds']:.2f} | {k['diffprivlib_ratio']:.3f} |",
            f"| goal: faster than diffprivlib, lower ratio | {'met' if k['profilevault_seconds'] < k['diffprivlib_seconds'] else 'missed'} | {'met' if k['profilevault_ratio'] < k['diffprivlib_ratio'] else 'missed'} |",
            "", "Model utility on the real data sets (issue 6) is in [models.md](models.md#evaluation-on-real-data).", ""]
