"""`python -m training.translator` runs the training job (see train.py)."""

from training.translator.train import main

if __name__ == "__main__":
    main()
