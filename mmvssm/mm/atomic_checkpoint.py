"""Crash-safe checkpoints for mmengine: atomic writes and a ``last_checkpoint`` that is never stale.

mmengine 0.10.7 writes checkpoints in place (``LocalBackend.put``: ``open(path, 'wb')``), writes
the ``last_checkpoint`` pointer with a plain ``open(..., 'w')``, and ``CheckpointHook`` deletes
the outdated checkpoints (``max_keep_ckpts``) *before* saving the new one. A process killed while
saving can therefore leave a truncated ``iter_N.pth``, a truncated or empty pointer, or (with
``max_keep_ckpts=1``) a pointer to a checkpoint that no longer exists -- and ``--resume`` fails.

Two pieces, both registered when ``import mmvssm`` runs with mmengine installed:

* :class:`AtomicLocalBackend`, file backend ``'atomic_local'`` (mmengine's ``register_backend``):
  ``put`` / ``put_text`` write to a temporary file in the same folder, flush + ``fsync`` it and
  ``os.replace`` it onto the target, so a reader sees either the old file or the complete new
  one. Usable on its own: ``backend_args=dict(backend='atomic_local')``.
* :class:`AtomicCheckpointHook` (mmengine's ``HOOKS``): ``CheckpointHook`` whose local
  checkpoints (latest, best and published ones) go through ``'atomic_local'``, which writes the
  pointer atomically too, and which deletes outdated checkpoints (``max_keep_ckpts``, the previous
  best) only *after* the new checkpoint and pointer are in place. Select it in a config with
  ``default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))`` (the other fields of the
  inherited ``CheckpointHook`` settings are kept).

A kill at any moment leaves at most a stray ``.<name>.tmp-<pid>`` file, which is never a
checkpoint name (``find_latest_checkpoint`` reads the pointer, which names complete files only).
A checkpoint the kill left beyond ``max_keep_ckpts`` is still listed in the latest checkpoint's
``keep_ckpt_ids``, so ``--resume`` removes it (mmengine's ``before_train``).
"""
import copy
import os
import os.path as osp
import tempfile
from typing import Union

import mmengine.runner
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

BACKEND_NAME = 'atomic_local'


def atomic_write(data: Union[bytes, str], path: str, encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, os.replace)."""
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode(encoding)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.tmp-{os.getpid()}-', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> what open(path, 'wb') would give
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # persist the rename itself (best effort; not possible on every platform)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put`` / ``put_text`` replace the target atomically."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj, filepath, encoding=encoding)


register_backend(BACKEND_NAME, AtomicLocalBackend, force=True)


def _is_local(path) -> bool:
    path = os.fspath(path)
    return '://' not in path


@HOOKS.register_module(force=True)
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves a corrupt or dangling "latest" checkpoint.

    Same arguments as mmengine's ``CheckpointHook``. When ``backend_args`` and
    ``file_client_args`` are both unset and the output folder is local, checkpoints are written
    with the ``'atomic_local'`` backend. The order of a save is: checkpoint (atomic), then the
    ``last_checkpoint`` pointer (atomic), then removal of checkpoints beyond ``max_keep_ckpts``.
    """

    def before_train(self, runner) -> None:
        out_dir = self.out_dir if self.out_dir is not None else runner.work_dir
        if self.backend_args is None and self.file_client_args is None and _is_local(out_dir):
            self.backend_args = dict(backend=BACKEND_NAME)
        super().before_train(runner)

    def _save_checkpoint_with_step(self, runner, step, meta):
        to_remove = None
        if self.max_keep_ckpts > 0 and not (
                len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step):
            # saved with the checkpoint before the trim: a resume after a kill between the save
            # and the removal below removes what is beyond max_keep_ckpts
            pending = list(self.keep_ckpt_ids) + [step]
            if len(pending) > self.max_keep_ckpts:
                to_remove = pending[0]
            self.keep_ckpt_ids.append(step)  # a deque of maxlen max_keep_ckpts
            runner.message_hub.update_info('keep_ckpt_ids', pending)

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if self.max_keep_ckpts > 0:
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        if not is_main_process():
            return
        atomic_write(str(self.last_ckpt), osp.join(runner.work_dir, 'last_checkpoint'))

        if to_remove is not None and to_remove != step:
            old = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(to_remove))
            if self.file_backend.isfile(old):
                self.file_backend.remove(old)
            elif self.file_backend.isdir(old):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(old)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's, except that the previous best checkpoint is removed only after the new
        best (and the latest checkpoint saved again with it) is written: mmengine removes it
        first, so a failed save left no best checkpoint. A failed save also leaves the best
        score and path as they were."""
        backend, deferred = self.file_backend, []
        info = runner.message_hub.runtime_info
        is_best_key = lambda k: k.startswith(('best_score', 'best_ckpt'))  # noqa: E731
        best_info = {k: v for k, v in info.items() if is_best_key(k)}
        best_paths = {k: copy.copy(v) for k, v in vars(self).items()
                      if k in ('best_ckpt_path', 'best_ckpt_path_dict')}
        backend.remove = lambda path: deferred.append((type(backend).remove, path))
        backend.rmtree = lambda path: deferred.append((type(backend).rmtree, path))
        try:
            super()._save_best_checkpoint(runner, metrics)
        except BaseException:
            for k in [k for k in info if is_best_key(k)]:
                del info[k]
            info.update(best_info)
            vars(self).update(best_paths)
            raise
        finally:
            del backend.remove, backend.rmtree  # the class's methods again
        current = {getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for method, path in deferred:
            if path not in current:
                method(backend, path)

    def _publish_model(self, runner, ckpt_path: str) -> None:
        """mmengine's, with the published file written atomically when it is local (mmengine's
        ``_publish_model`` calls ``save_checkpoint`` without the hook's backend)."""
        plain = mmengine.runner.save_checkpoint

        def save(checkpoint, filename, *args, **kwargs):
            if _is_local(filename) and not kwargs.get('backend_args'):
                kwargs['backend_args'] = dict(backend=BACKEND_NAME)
            return plain(checkpoint, filename, *args, **kwargs)

        mmengine.runner.save_checkpoint = save
        try:
            super()._publish_model(runner, ckpt_path)
        finally:
            mmengine.runner.save_checkpoint = plain


__all__ = ['AtomicCheckpointHook', 'AtomicLocalBackend', 'atomic_write', 'BACKEND_NAME']
