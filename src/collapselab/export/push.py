"""Upload an export to the Hugging Face Hub: the dataset as ``ORG/NAME`` (a dataset repository),
each adapter as ``ORG/NAME-<adapter>`` (a model repository).

Uploads go through :class:`huggingface_hub.HfApi`, whose token comes from the environment
(``HF_TOKEN``) or ``hf auth login``; collapselab never reads, passes or writes it. Every repository
id is checked before the first upload (and, by :func:`collapselab.export.run.export_run`, before
the export is written), so a bad name fails before anything is half-pushed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collapselab.errors import CollapselabError
from collapselab.export.adapters import ADAPTERS_DIR
from collapselab.export.hub_names import adapter_repo_id, check_repo_id
from collapselab.export.run import DATASET_DIR


@dataclass(frozen=True)
class Upload:
    """One repository an export goes to: its id, type ("dataset" / "model") and local folder."""

    repo_id: str
    repo_type: str
    folder: Path


def uploads(out: Path, repo_id: str) -> list[Upload]:
    """The repositories an export folder goes to, every id checked."""
    out = Path(out)
    found = [Upload(repo_id, "dataset", out / DATASET_DIR)]
    adapters = out / ADAPTERS_DIR
    if adapters.is_dir():
        found += [Upload(adapter_repo_id(repo_id, folder.name), "model", folder)
                  for folder in sorted(adapters.iterdir()) if folder.is_dir()]
    for upload in found:
        check_repo_id(upload.repo_id)
    return found


def push_export(out: Path, repo_id: str, *, private: bool = False, api=None) -> list[tuple[Upload, str]]:
    """Create (if needed) and upload every repository of the export ``out``; returns each upload
    with the URL of its commit. Hub errors (offline, not logged in, no rights) become a
    :class:`CollapselabError` that says which repository failed and what is already uploaded."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    todo = uploads(out, repo_id)
    done: list[tuple[Upload, str]] = []
    for upload in todo:
        try:
            api.create_repo(upload.repo_id, repo_type=upload.repo_type, private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=upload.repo_id, repo_type=upload.repo_type,
                                       folder_path=str(upload.folder),
                                       commit_message=f"collapselab export ({upload.folder.name})")
        except CollapselabError:
            raise
        except Exception as exc:  # offline, no token, no rights, network: all for the user to fix
            already = ", ".join(u.repo_id for u, _ in done) or "nothing"
            raise CollapselabError(
                f"--push: uploading {upload.repo_type} {upload.repo_id} failed ({type(exc).__name__}: {exc}). "
                f"Already uploaded: {already}. Check HF_HUB_OFFLINE is unset or 0, and log in "
                "(`hf auth login` or HF_TOKEN)") from exc
        done.append((upload, str(getattr(commit, "commit_url", None) or commit)))
    return done
