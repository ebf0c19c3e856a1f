"""`python -m training.gan` runs the training job (see train.py); `python -m training.gan.rejudge`
re-judges the shipped model."""

from training.gan.train import main

if __name__ == "__main__":
    main()
