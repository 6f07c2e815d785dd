"""editprobe: how much does a model edit raise the model's uncertainty under paraphrase perturbations?"""

__version__ = "0.1.0"
