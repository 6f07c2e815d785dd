"""How each standard metric is computed, in words: written into every results file (torch-free)."""

PROTOCOLS: dict[str, str] = {
    "reliability": "Teacher-forced token accuracy of the new target after the edit prompt: the share of target tokens "
                   "that equal the argmax at the position predicting them (EasyEdit test_prediction_acc).",
    "generalization": "Teacher-forced token accuracy of the new target after the rephrased edit prompt "
                      "(EasyEdit test_prediction_acc).",
    "portability": "Teacher-forced token accuracy of answers[0] after each portability probe prompt "
                   "(EasyEdit/KnowEdit portability).",
    "locality": "Share of teacher-forced argmax tokens over answers[0] after each locality probe prompt that are "
                "unchanged between the pre-edit and post-edit model (EasyEdit/KnowEdit locality).",
    "fluency": "ROME n-gram entropy: per text the mean of 2/3 * H2 and 4/3 * H3, the base-2 entropies of its word "
               "bigram and trigram frequencies, averaged arithmetically over texts.",
    "adoption_new": "Share of free-form samples that mention any alias of the new target "
                    "(case-insensitive, whole-word match).",
    "adoption_old": "Share of free-form samples that mention any alias of the pre-edit answer "
                    "(case-insensitive, whole-word match); null when the old answer is unknown.",
}
