"""Building blocks shared by the backbones: mixers (Mamba, SS2D, gated CNN), norms, stems,
downsampling, patch/position embeddings, MLPs. Import from the submodules (one job per file)."""
