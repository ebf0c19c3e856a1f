"""`python -m training.translator` runs the training job (see train.py);
`python -m training.translator.translate` translates with the exported model."""

from training.translator.train import main

if __name__ == "__main__":
    main()
