"""Short training runs of the demo configs learn: lower training loss, and a validation metric
clearly above the one of the very model the run started from (same seed, evaluated the same way).

Measured (toy data, CPU, deterministic for a given machine / thread count):
* seg, UperNet + Vim-T demo, 60 iterations: loss 1.61 -> 0.92, mIoU 4.6 (untrained) -> 45.1;
  asserted: mIoU >= untrained + 15 and >= 25;
* det, Mask R-CNN + Vim-T demo, 200 iterations (the demo's schedule): loss 2.84 -> 1.87, box
  AR@100 0.009 -> 0.061, box mAP@0.5 0.000 -> 0.009 (segm mAP stays ~0: from scratch, a plain
  backbone localises long before its masks / rankings are good). These early numbers are chaotic:
  on one Zen 4 VM (2026-12-07), four scan kernels that all match fp64 to ~1e-6 (outputs and
  gradients) but differ in the last bits gave loss 2.83 -> 1.94-2.00, AR@100 0.000 -> 0.039-0.065
  and mAP@0.5 0.000 -> 0.003-0.022. Asserted: AR@100 >= untrained + 0.02, mAP@0.5 above the
  untrained model's (>= + 0.001).
The thresholds leave room for machine-to-machine variation but cannot be reached by the untrained
model (whose metric is measured in the same test).
"""
import math


def _mean(xs):
    return sum(xs) / len(xs)


def _loss_drop(log, key='loss'):
    losses = [r[key] for r in log]
    assert all(math.isfinite(v) for v in losses), losses
    k = max(1, len(losses) // 4)
    return _mean(losses[:k]), _mean(losses[-k:])


def test_seg_demo_learns(seg_run):
    first, last = _loss_drop(seg_run['log'])
    assert last < 0.75 * first, (first, last)
    before, after = seg_run['untrained']['mIoU'], seg_run['trained']['mIoU']
    print(f'seg: loss {first:.3f} -> {last:.3f}; mIoU untrained {before} -> trained {after}')
    assert after >= before + 15, (before, after)
    assert after >= 25, after


def test_det_demo_learns(det_run):
    first, last = _loss_drop(det_run['log'])
    assert last < 0.8 * first, (first, last)
    u, t = det_run['untrained'], det_run['trained']
    print(f'det: loss {first:.3f} -> {last:.3f}; untrained {u}; trained {t}')
    # Mask R-CNN from scratch on a plain backbone: after 200 iterations it finds objects (recall)
    # long before its boxes rank well (mAP); the untrained model finds next to nothing.
    assert t['coco/bbox_AR@100'] >= u['coco/bbox_AR@100'] + 0.02, (u, t)
    assert t['coco/bbox_mAP_50'] >= u['coco/bbox_mAP_50'] + 0.001, (u, t)


def test_mambaout_seg_demo_runs(toy_root):
    """The third demo config (MambaOut-T UperNet): a few iterations, checkpoint, validation."""
    import e2e_util as U
    work = toy_root / 'seg_mambaout'
    U.tool('train.py', U.SEG_DEMO_MAMBAOUT, '--work-dir', work, '--cfg-options',
           'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
           'default_hooks.checkpoint.interval=4', 'default_hooks.logger.interval=1', cwd=toy_root)
    log = U.scalars(work)[-1]
    assert [r['iter'] for r in log] == [1, 2, 3, 4]
    assert (work / 'iter_4.pth').is_file()
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_4.pth')
