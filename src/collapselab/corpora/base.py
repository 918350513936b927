"""The record every human corpus produces, and the registry of corpus loaders."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from collapselab.registry import Registry


@dataclass(frozen=True)
class Record:
    """One human-written example: an instruction (prompt), optional context, the human response.

    ``id`` is unique within a corpus and stable across runs (it keys every later artifact);
    ``category`` drives the stratified split (Dolly's category, the novel for Austen).
    """

    id: str
    prompt: str
    response: str
    category: str = "default"
    context: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


#: Corpus loaders. Each is a callable ``(spec: CorpusSpec) -> list[Record]``.
CORPORA: Registry = Registry("corpus")
CORPORA.add("austen", "collapselab.corpora.austen:load_austen",
            description="Jane Austen's six novels (Debian r-cran-janeaustenr), passage continuation")
CORPORA.add("jsonl", "collapselab.corpora.files:load_jsonl", description="local JSON-lines file")
CORPORA.add("csv", "collapselab.corpora.files:load_csv", description="local CSV file")
CORPORA.add("parquet", "collapselab.corpora.files:load_parquet", description="local Parquet file")
CORPORA.add("txt", "collapselab.corpora.files:load_txt_folder",
            description="folder of plain .txt files, split into passages (continuation tasks)")
CORPORA.add("hf", "collapselab.corpora.hf:load_hf",
            description="Hugging Face dataset by name (needs the hub), e.g. databricks/databricks-dolly-15k")
