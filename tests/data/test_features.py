import torch

from metarec.data.features import FeatureSpace, fit_features
from metarec.splits import SplitConfig, make_split


def test_unseen_values_map_to_unknown(tiny_dataset):
    split = make_split(tiny_dataset, SplitConfig(protocol="item-cold"))
    fs = fit_features(tiny_dataset, split.train)
    ucodes = fs.encode_users(tiny_dataset.users)
    icat, genre = fs.encode_items(tiny_dataset.items)
    assert ucodes.shape == (tiny_dataset.n_users, 4) and ucodes.dtype == torch.long
    assert genre.shape == (tiny_dataset.n_items, len(fs.genres))
    # new items are released later: their decades are unseen in meta-train -> code 0
    train_items = set(split.train["item"].tolist())
    decades_seen = {fs.item_vocab["decade"][c] for c in icat[list(train_items), 0].tolist()}
    assert "<unk>" not in decades_seen
    unseen = [i for i in range(tiny_dataset.n_items) if i not in train_items]
    assert unseen
    for i in unseen:
        dec = str(int(tiny_dataset.items["year"].iloc[i]) // 10 * 10)
        assert (icat[i, 0].item() == 0) == (dec not in fs.item_vocab["decade"])
    # vocab round-trips
    assert FeatureSpace.from_dict(fs.to_dict()) == fs


def test_zip_prefix(tiny_dataset):
    fs = fit_features(tiny_dataset, tiny_dataset.inter, zip_prefix=1)
    assert all(len(v) == 1 for v in fs.user_vocab["zip"][1:])
