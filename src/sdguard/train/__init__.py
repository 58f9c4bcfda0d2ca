"""Training: the shared pieces of a diffusion training loop (:mod:`.loop`), fine-tuning any model on
any dataset (:mod:`.finetune`, ``sdguard train``) and the builtin tiny model's recipe (:mod:`.tiny`)."""

from .finetune import TrainConfig, train
from .loop import (
                   cosine_lr,
                   ema_decay,
                   load_train_state,
                   log_row,
                   save_train_state,
                   set_lr,
                   write_log,
)
from .tiny import TrainTinyConfig, export_builtin, train_tiny

__all__ = ["TrainConfig", "train", "TrainTinyConfig", "train_tiny", "export_builtin", "cosine_lr", "set_lr", "ema_decay",
           "log_row", "write_log", "save_train_state", "load_train_state"]
