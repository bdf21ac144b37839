"""Data preparation against datatrove: ``python -m bench.dataprep [--mb 1000] [--repeat 1]``.

One generated corpus (``--mb`` MB of UTF-8 text in 8 Parquet files: web-like documents,
mostly English, some in six other languages, some that Gopher's rules reject, ~10 % exact
duplicates) goes through the same pipeline, language (keep English, ``min_score``) ->
Gopher quality -> exact dedup -> Parquet, in three contenders, each a fresh subprocess:

- **millpond**: ``read_parquet`` ``.pipe(ops.language)`` ``.pipe(ops.gopher_quality)``
  ``.pipe(ops.dedup_exact)`` ``.write_parquet`` on the embedded engine, 2 executors;
- **datatrove** (``pip install datatrove nltk xxhash``): LocalPipelineExecutor, tasks=2,
  workers=2, its exact-dedup stages (signature, find, filter). Its ``LanguageFilter``
  downloads a fastText model, so a custom filter block calls py3langid (millpond's
  model); its English Gopher words come from NLTK's ``word_tokenize``, whose punkt model
  is a download too, so the same Treebank word tokenizer runs over regex-split sentences;
- **plain loop**: one process, pyarrow batches, py3langid, millpond's Gopher rules
  applied to each batch, a set of md5 digests, a pyarrow ParquetWriter.

Reported per contender: wall time, docs/s and MB/s of input, peak RSS of its process tree
(psutil, sampled; shared pages count once per process) and rows kept, with how many of
the kept texts millpond kept too. A contender whose packages are missing is skipped."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FILES = 8
SEED = 14
MIN_SCORE = 0.65
EXECUTORS = 2
CONTENDERS = ("millpond", "datatrove", "plain loop")

WORDS = {
    "en": (
        "the of and to in is that it was for on are as with his they at be this have from "
        "or one had by word but not what all were we when your can said there use an each "
        "which she do how their if will up other about out many then them these so some her "
        "would make like him into time has look two more write go see number no way could "
        "people my than first water been call who oil its now find long down day did get "
        "come made may part over new sound take only little work know place year live me "
        "back give most very after thing our just name good sentence man think say great "
        "where help through much before line right too mean old any same tell boy follow "
        "came want show also around form three small set put end does another well large "
        "must big even such because turn here why ask went men read need land different "
        "home us move try kind hand picture again change off play spell air away animal "
        "house point page letter mother answer found study still learn should world high "
        "every near add food between own below country plant last school father keep tree "
        "never start city earth eye light thought head under story saw left few while along"
    ).split(),
    "de": (
        "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als "
        "auch es an werden aus er hat dass sie nach wird bei einer um am sind noch wie einem "
        "über einen so zum war haben nur oder aber vor zur bis mehr durch man sein wurde "
        "sei heute schon immer Jahr Stadt Leute Zeit Haus Arbeit gegen zwischen"
    ).split(),
    "fr": (
        "le de un à être et en avoir que pour dans ce il qui ne sur se pas plus pouvoir par "
        "je avec tout faire son mettre autre on mais nous comme ou si leur y dire elle "
        "devoir avant deux même prendre aussi celui donner bien où fois vous encore nouveau "
        "aller cela entre premier vouloir déjà grand mon me moins aucun lui temps très "
        "savoir falloir voir quelque sans raison notre dont non an monde jour"
    ).split(),
    "es": (
        "el la de que y a en un ser se no haber por con su para como estar tener le lo todo "
        "pero más hacer o poder decir este ir otro ese si me ya ver porque dar cuando él muy "
        "sin vez mucho saber qué sobre mi alguno mismo yo también hasta año dos querer entre "
        "así primero desde grande eso ni nos llegar pasar tiempo ella sí día uno bien poco"
    ).split(),
    "it": (
        "il di che è e la per un in non una sono mi ho lo ma ha le si ti con cosa se io come "
        "da ci questo qui hai bene tu del sei anche tutto alla gli della mio me solo lei "
        "perché lui fatto molto ora suo essere nel sta stato quando dove grazie allora "
        "niente siamo fare tempo sempre cosa sua vuoi andare signore prima tutti"
    ).split(),
    "pt": (
        "de que não o a do da em um para é com uma os no se na por mais as dos como mas foi "
        "ao ele das tem à seu sua ou ser quando muito há nos já está eu também só pelo pela "
        "até isso ela entre era depois sem mesmo aos ter seus quem nas me esse eles estão "
        "você tinha foram essa num nem suas meu às minha têm numa pelos elas havia"
    ).split(),
    "ru": (
        "и в не на я быть он с что а по это она этот к но они мы как из у который то за "
        "свой что весь год от так о для ты же все тот мочь вы человек такой его сказать "
        "только или ещё бы себя один как уже до время если сам когда другой вот говорить "
        "наш мой знать стать при чтобы дело жизнь кто первый очень два день её новый рука"
    ).split(),
}
#: share of the base documents of each kind (the rest of the rows are exact duplicates)
KINDS = {
    "en": 0.62,
    "other language": 0.18,
    "short": 0.05,
    "bullets": 0.05,
    "repeated lines": 0.04,
    "hashtags": 0.03,
    "numbers": 0.03,
}
DUPLICATES = 0.10


# --- the corpus -------------------------------------------------------------------------------


def _sentences(rng: np.random.Generator, words: list[str], count: int) -> list[str]:
    """``count`` sentences of 6..24 words drawn Zipf-like from ``words``."""
    vocab = np.array(words, dtype=object)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 0.8
    weights /= weights.sum()
    lengths = rng.integers(6, 25, count)
    drawn = rng.choice(len(words), int(lengths.sum()), p=weights)
    ends = rng.choice([". ", ". ", ". ", "? ", "! "], count)
    out, at = [], 0
    for n, end in zip(lengths, ends):
        chunk = list(vocab[drawn[at : at + n]])
        at += n
        if n > 12:
            chunk[n // 2] += ","
        chunk[0] = chunk[0].capitalize()
        out.append(" ".join(chunk) + end.strip())
    return out


class _Corpus:
    """Documents of each kind, from pools of generated sentences."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.pools = {
            lang: _sentences(self.rng, words, 40_000 if lang == "en" else 6_000)
            for lang, words in WORDS.items()
        }
        self.others = [lang for lang in WORDS if lang != "en"]

    def _pick(self, lang: str, n: int) -> list[str]:
        pool = self.pools[lang]
        return [pool[i] for i in self.rng.integers(0, len(pool), n)]

    def _article(self, lang: str) -> str:
        paragraphs = []
        for _ in range(int(self.rng.integers(3, 10))):
            paragraphs.append(" ".join(self._pick(lang, int(self.rng.integers(2, 7)))))
        title = self._pick(lang, 1)[0].rstrip(".?!")
        return title + "\n\n" + "\n\n".join(paragraphs)

    def document(self, kind: str) -> str:
        rng = self.rng
        if kind == "en":
            return self._article("en")
        if kind == "other language":
            return self._article(self.others[int(rng.integers(0, len(self.others)))])
        if kind == "short":
            return " ".join(self._pick("en", int(rng.integers(1, 3))))
        if kind == "bullets":
            mark = "- " if rng.random() < 0.5 else "• "
            return "\n".join(mark + s for s in self._pick("en", int(rng.integers(8, 30))))
        if kind == "repeated lines":
            line = "Click here to read more about " + self._pick("en", 1)[0].lower()[:-1] + "..."
            body = "\n".join(self._pick("en", int(rng.integers(3, 8))))
            return body + "\n" + "\n".join([line] * int(rng.integers(10, 30)))
        if kind == "hashtags":
            tags = [f"#{w}" for w in self.rng.choice(WORDS["en"], 60)]
            text = self._pick("en", int(rng.integers(5, 12)))
            return " ".join(s + " " + " ".join(tags[i : i + 3]) for i, s in enumerate(text))
        if kind == "numbers":
            rows = rng.integers(0, 100_000, (int(rng.integers(20, 60)), 5))
            lines = [" | ".join(f"{v / 100:.2f}" for v in row) for row in rows]
            return "Price table\n" + "\n".join(lines) + "\n" + self._pick("en", 1)[0]
        raise ValueError(kind)


def write_corpus(root: Path, mb: float, seed: int = SEED) -> tuple[Path, dict[str, Any]]:
    """Generate (once; reused when its marker is there) ~``mb`` MB (10**6 bytes of text)
    of documents into ``root/dataprep-{mb}mb-s{seed}/*.parquet``; returns it and its facts."""
    data = root / f"dataprep-{mb:g}mb-s{seed}"
    marker = data / "_bench_meta.json"
    if marker.exists():
        return data, json.loads(marker.read_text())
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    started = time.perf_counter()
    corpus = _Corpus(seed)
    kinds = list(KINDS)
    probs = np.array(list(KINDS.values()))
    budget = mb * 1e6 * (1 - DUPLICATES)
    texts: list[str] = []
    counts = dict.fromkeys(kinds, 0)
    size = 0
    while size < budget:
        for k in corpus.rng.choice(len(kinds), 100, p=probs / probs.sum()):
            text = corpus.document(kinds[k])
            counts[kinds[k]] += 1
            texts.append(text)
            size += len(text.encode())
    base = len(texts)
    copies = int(round(base * DUPLICATES / (1 - DUPLICATES)))
    texts += [texts[i] for i in corpus.rng.integers(0, base, copies)]
    order = corpus.rng.permutation(len(texts))
    per = -(-len(texts) // FILES)
    for f in range(FILES):
        part = order[f * per : (f + 1) * per]
        table = pa.table(
            {"id": pa.array(part, pa.int64()), "text": pa.array([texts[i] for i in part])}
        )
        pq.write_table(table, data / f"part-{f}.parquet", row_group_size=8192)
    meta = {
        "docs": len(texts),
        "bytes": sum(len(t.encode()) for t in texts),
        "distinct": len(set(texts)),
        "kinds": counts,
        "duplicate_rows": copies,
        "seconds": round(time.perf_counter() - started, 1),
    }
    marker.write_text(json.dumps(meta))
    return data, meta


# --- contenders (each runs in its own subprocess) -----------------------------------------------


def run_millpond(data: Path, out: Path, work: Path) -> None:
    import millpond
    from millpond import ops

    with millpond.init(data_root=str(work), num_executors=EXECUTORS, progress=False) as sp:
        (
            sp.read_parquet(str(data / "*.parquet"))
            .pipe(ops.language("text", keep=["en"], min_score=MIN_SCORE))
            .pipe(ops.gopher_quality("text"))
            .pipe(ops.dedup_exact(["text"], order_by="id"))
            .write_parquet(str(out))
        )


def load_identifier() -> Any:
    """py3langid with normalised probabilities, as ``millpond.ops.language`` loads it."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def plain_loop(data: Path, out: Path, work: Path) -> None:
    from millpond.ops import gopher_quality

    identify = load_identifier().classify
    gopher = gopher_quality("text").filter  # the rules, applied to a pyarrow batch
    seen: set[bytes] = set()
    writer = None
    try:
        for path in sorted(data.glob("*.parquet")):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                table = pa.Table.from_batches([batch])
                keep = []
                for text in table.column("text").to_pylist():
                    lang, score = identify(text) if text and not text.isspace() else (None, 0)
                    keep.append(lang == "en" and score >= MIN_SCORE)
                table = gopher(table.filter(pa.array(keep)))
                unique = []
                for text in table.column("text").to_pylist():
                    digest = hashlib.md5(text.encode()).digest()
                    unique.append(digest not in seen)
                    seen.add(digest)
                table = table.filter(pa.array(unique, pa.bool_()))
                if writer is None:
                    out.mkdir(parents=True)
                    writer = pq.ParquetWriter(out / "part-0.parquet", table.schema)
                writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def run_datatrove(data: Path, out: Path, work: Path) -> None:
    import importlib.util

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.filters import GopherQualityFilter
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig

    from bench.dataprep_datatrove import OfflineNLTKTokenizer, Py3LangidFilter, doc_text

    hash_fc = "xxhash" if importlib.util.find_spec("xxhash") else "sha1"
    config = ExactDedupConfig(content_getter=doc_text, hash_config=HashConfig(hash_fc=hash_fc))
    filtered, sigs, dups = work / "filtered", work / "sigs", work / "dups"
    tasks = {"tasks": EXECUTORS, "workers": EXECUTORS}
    stage1 = LocalPipelineExecutor(
        [
            ParquetReader(str(data), glob_pattern="*.parquet"),
            Py3LangidFilter(["en"], MIN_SCORE),
            GopherQualityFilter(language=OfflineNLTKTokenizer()),
            ParquetWriter(str(filtered), output_filename="${rank}.parquet"),
            ExactDedupSignature(str(sigs), config, finder_workers=EXECUTORS),
        ],
        logging_dir=str(work / "logs1"),
        **tasks,
    )
    stage2 = LocalPipelineExecutor(
        [ExactFindDedups(str(sigs), str(dups), config)],
        logging_dir=str(work / "logs2"),
        depends=stage1,
        **tasks,
    )
    stage3 = LocalPipelineExecutor(
        [
            ParquetReader(str(filtered), glob_pattern="*.parquet"),
            ExactDedupFilter(str(dups), config),
            ParquetWriter(str(out), output_filename="${rank}.parquet"),
        ],
        logging_dir=str(work / "logs3"),
        depends=stage2,
        **tasks,
    )
    stage3.run()


RUNNERS: dict[str, Callable[[Path, Path, Path], None]] = {
    "millpond": run_millpond,
    "datatrove": run_datatrove,
    "plain loop": plain_loop,
}
NEEDS = {
    "millpond": ["millpond", "py3langid"],
    "datatrove": ["datatrove", "nltk", "py3langid", "millpond"],
    "plain loop": ["millpond", "py3langid"],
}


def missing(name: str) -> list[str]:
    """The modules contender ``name`` needs that are not installed."""
    import importlib.util

    return [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]


# --- measuring ---------------------------------------------------------------------------------


def measure(name: str, data: Path, root: Path) -> dict[str, Any]:
    """Run contender ``name`` in a fresh subprocess; its time, peak tree RSS and output."""
    import psutil

    from bench.measure import tree_rss

    out, work = root / "out", root / "work"
    shutil.rmtree(root, ignore_errors=True)
    work.mkdir(parents=True)
    log = root / "log.txt"
    cmd = [sys.executable, "-m", "bench.dataprep", "--contender", name, "--data", str(data)]
    cmd += ["--out", str(out), "--work", str(work)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), *sys.path]))}
    with open(log, "w") as sink:
        child = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        proc = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(proc))
            time.sleep(0.1)
    text = log.read_text()
    result = re.findall(r"^DATAPREP (.*)$", text, re.M)
    if child.returncode != 0 or not result:
        raise RuntimeError(f"{name} failed (exit {child.returncode}):\n{text[-3000:]}")
    files = sorted(out.rglob("*.parquet"))
    digests = set()
    for path in files:
        for text_value in pq.read_table(path, columns=["text"]).column("text").to_pylist():
            digests.add(hashlib.md5(text_value.encode()).digest())
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    return {**json.loads(result[-1]), "peak_rss": peak, "rows": rows, "digests": digests}


def _child(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    RUNNERS[args.contender](Path(args.data), Path(args.out), Path(args.work))
    print("DATAPREP " + json.dumps({"seconds": time.perf_counter() - started}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--data-dir", default=None, help="where the corpus is kept")
    parser.add_argument("--only", action="append", choices=CONTENDERS)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:
        return _child(args)
    data_root = Path(args.data_dir or Path(tempfile.gettempdir()) / "millpond-bench-data")
    data, meta = write_corpus(data_root, args.mb)
    mb = meta["bytes"] / 1e6
    print(
        f"corpus: {meta['docs']:,} documents, {mb:,.1f} MB of text, {meta['distinct']:,} "
        f"distinct, in {FILES} Parquet files ({data}); base documents by kind: {meta['kinds']}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="millpond-bench-dataprep-"))
    try:
        for name in args.only or CONTENDERS:
            absent = missing(name)
            if absent:
                print(f"{name}: skipped, not installed: {', '.join(absent)}", flush=True)
                continue
            runs = [measure(name, data, scratch / name) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_rss"] = max(r["peak_rss"] for r in runs)
            results[name] = best
            print(f"{name}: {best['seconds']:.1f} s, kept {best['rows']:,}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"\nlanguage(en, min_score={MIN_SCORE}) -> Gopher quality -> exact dedup -> Parquet, "
        f"{meta['docs']:,} docs, {mb:,.1f} MB, best of {args.repeat}"
    )
    print(
        f"  {'':11} {'wall s':>8} {'docs/s':>9} {'MB/s':>6} {'peak RSS':>10} {'kept':>9}"
        f" {'also kept by millpond':>22}"
    )
    reference = results.get("millpond", {}).get("digests")
    for name, r in results.items():
        common = "" if reference is None else f"{len(r['digests'] & reference):,}"
        print(
            f"  {name:11} {r['seconds']:8.1f} {meta['docs'] / r['seconds']:9,.0f}"
            f" {mb / r['seconds']:6.2f} {r['peak_rss'] / 2**20:7,.0f} MiB {r['rows']:9,}"
            f" {common:>22}"
        )
    if "millpond" in results and "datatrove" in results:
        ratio = results["datatrove"]["seconds"] / results["millpond"]["seconds"]
        print(f"  millpond vs datatrove: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
