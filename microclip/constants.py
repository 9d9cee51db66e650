"""Facts the method fixes once; every module imports them from here."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The reference multiplies cosine logits by a constant 100 and drops CLIP's learned logit_scale.
LOGIT_SCALE = 100.0

DEFAULT_FUSION_RATIO = 0.5  # rho: weight of [CLS] in the fused logits (loss and inference)
NCUT_TAU = 0.2
NCUT_EPS = 1e-6
# Eigenvalues of the NCut Laplacian (in [0, 2]) closer than this to the second-smallest one belong to
# its eigenspace: far above float32/float64 solver noise, so every solver sees the same space.
NCUT_DEGENERACY_TOL = 1e-5
# Training modes that train and report the [CLS] branch only (SOAP stays at its start); recipe.Mode names them.
CLS_ONLY_MODES = frozenset({"baseline", "wca_baseline"})
# above the prediction of a model trained as a CLS-only baseline (train.py --baseline, --wca_baseline): the app's and
# the walkthrough command's
CLS_ONLY_FLAG = (
    "**A CLS-only baseline:** its answer is the `[CLS]` only row below, the branch it trained; the fused and `[FG]` "
    "rows mix in a SOAP that never trained."
)
