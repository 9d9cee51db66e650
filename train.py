"""microCLIP self-training: ``python train.py --dataset NAME --train_config ours_vit_b_32_cupl_proto``."""

import sys

from microclip.cli import train

if __name__ == "__main__":
    from viz.plots import save_training_plots

    sys.exit(train(plot=save_training_plots))
