"""The plain script a researcher would write for an off-the-shelf baseline, without artlab.

    python benchmarks/plain_offtheshelf.py ../shared/data/genres

torchvision's ImageNet MobileNetV2, PIL + torchvision transforms at 128 px, a DataLoader with batch 64, the
global-average-pooled last block as features, then scikit-learn: a stratified 70/15/15 split, standardised
features, a logistic regression whose C (0.01, 0.1, 1) is chosen on validation; it prints the test accuracy.
Everything is computed again on every run, as such a script does. `offtheshelf_rerun.py` times it against
`artlab train --strategy off_the_shelf` (the ImageNet weights must be in torch's hub cache: artlab puts them
there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

SIZE, BATCH = 128, 64


class Images(Dataset):
    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.transform = T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), T.ToTensor(),
                                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.open(self.paths[index]).convert("RGB"))


def main(root: Path) -> None:
    paths = sorted(p for p in root.glob("*/*") if p.is_file())
    labels = np.array([p.parent.name for p in paths])
    model = torchvision.models.mobilenet_v2(weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1).eval()
    with torch.no_grad():
        features = torch.cat([model.features(x).mean(dim=(2, 3)) for x in DataLoader(Images(paths), BATCH)]).numpy()
    index = np.arange(len(paths))
    train, rest = train_test_split(index, test_size=0.3, stratify=labels, random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=0)
    scaler = StandardScaler().fit(features[train])
    x = scaler.transform(features)
    fitted = [LogisticRegression(C=c, max_iter=3000, random_state=0).fit(x[train], labels[train])
              for c in (0.01, 0.1, 1.0)]
    best = max(fitted, key=lambda clf: clf.score(x[val], labels[val]))
    print(f"test accuracy {best.score(x[test], labels[test]):.4f} (C={best.C}, {len(paths)} images)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
