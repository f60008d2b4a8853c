"""``python -m trainer.finetune_vqa``: the VQA fine-tuning command line (the task lives in :mod:`trainer.tasks.vqa`)."""
from trainer.tasks.vqa.run import main

if __name__ == "__main__":
    main()
