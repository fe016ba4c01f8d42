"""Dataset readers on small files written in the real formats."""

from __future__ import annotations

import json

import pytest

from lib_clipcap.errors import MissingFileError
from lib_clipcap.eval.datasets import DatasetError, detect_format, load_dataset, read_flickr_captions


def _flickr_pairs(n: int) -> list[tuple[str, list[str]]]:
    return [(f"{1000 + i}_abc.jpg", [f"a dog number {i} runs , fast .", f"caption two of {i}"]) for i in range(n)]


def test_flickr_captions_txt_and_paper_split(tmp_path):
    lines = ["image,caption"]
    for name, caps in _flickr_pairs(12):
        lines += [f"{name},{c}" for c in caps]
    lines.append('1011_abc.jpg,"a quoted, caption with a comma"')
    f = tmp_path / "captions.txt"
    f.write_text("\n".join(lines) + "\n")
    (tmp_path / "Images").mkdir()
    test = load_dataset(f, split="test", test_images=3)
    assert detect_format(f) == "flickr"
    assert [it.image_id for it in test.items] == ["1009_abc.jpg", "1010_abc.jpg", "1011_abc.jpg"]
    assert test.items[-1].references[-1] == "a quoted, caption with a comma"
    assert test.items[0].path == tmp_path / "Images" / "1009_abc.jpg"
    # Captions that contain commas are not split (the caption is everything after the first comma).
    assert test.items[0].references[0] == "a dog number 9 runs , fast ."
    train = load_dataset(tmp_path, split="train", test_images=3)  # a folder holding captions.txt
    assert len(train) == 9 and all(it.split == "train" for it in train.items)
    assert len(load_dataset(f, split="all", test_images=3)) == 12


def test_flickr_token_file_and_flickr30k_results_csv(tmp_path):
    tok = tmp_path / "Flickr8k.token.txt"
    tok.write_text("".join(f"{n}#{j}\t{c}\n" for n, caps in _flickr_pairs(3) for j, c in enumerate(caps)))
    pairs = read_flickr_captions(tok)
    assert pairs[0] == ("1000_abc.jpg", ["a dog number 0 runs , fast .", "caption two of 0"])
    res = tmp_path / "results.csv"
    res.write_text("image_name| comment_number| comment\n"
                   + "".join(f"{n}| {j}| {c}\n" for n, caps in _flickr_pairs(3) for j, c in enumerate(caps)))
    assert read_flickr_captions(res) == pairs


def test_flickr_errors_name_the_problem(tmp_path):
    f = tmp_path / "captions.txt"
    f.write_text("file;text\nx.jpg;hello\n")
    with pytest.raises(DatasetError, match="image,caption"):
        read_flickr_captions(f)
    f.write_text("image,caption\na.jpg,one\n")
    with pytest.raises(DatasetError, match="too few"):
        load_dataset(f, split="test")
    with pytest.raises(MissingFileError, match="nope"):
        load_dataset(tmp_path / "nope.txt")


def test_karpathy_json_splits(tmp_path):
    images = [
        {"filepath": "val2014", "filename": "COCO_1.jpg", "cocoid": 1, "split": "test",
         "sentences": [{"raw": "A cat.", "tokens": ["a", "cat"]}, {"raw": "A kitten.", "tokens": ["a", "kitten"]}]},
        {"filepath": "val2014", "filename": "COCO_2.jpg", "cocoid": 2, "split": "restval",
         "sentences": [{"raw": "A dog.", "tokens": ["a", "dog"]}]},
        {"filepath": "train2014", "filename": "COCO_3.jpg", "cocoid": 3, "split": "train",
         "sentences": [{"raw": "A bird.", "tokens": ["a", "bird"]}]},
        {"filepath": "val2014", "filename": "COCO_4.jpg", "cocoid": 4, "split": "val",
         "sentences": [{"raw": "A cow.", "tokens": ["a", "cow"]}]},
    ]
    f = tmp_path / "dataset_coco.json"
    f.write_text(json.dumps({"images": images, "dataset": "coco"}))
    assert detect_format(f) == "karpathy"
    test = load_dataset(f, images=tmp_path)
    assert [it.image_id for it in test.items] == ["1"] and test.items[0].references == ["A cat.", "A kitten."]
    assert test.items[0].path == tmp_path / "val2014" / "COCO_1.jpg"
    assert [it.image_id for it in load_dataset(f, split="train").items] == ["2", "3"]  # restval trains too
    assert [it.image_id for it in load_dataset(f, split="val").items] == ["4"]
    flickr = tmp_path / "dataset_flickr8k.json"
    flickr.write_text(json.dumps({"dataset": "flickr8k", "images": [
        {"filename": "x.jpg", "imgid": 0, "split": "test", "sentences": [{"raw": "A man."}]}]}))
    assert load_dataset(flickr).items[0].image_id == "x.jpg"
    with pytest.raises(DatasetError, match="split 'bogus'"):
        load_dataset(f, split="bogus")


def test_coco_annotations(tmp_path):
    f = tmp_path / "captions_val2014.json"
    f.write_text(json.dumps({
        "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}, {"id": 7, "file_name": "b.jpg"}],
        "annotations": [{"image_id": 42, "id": 1, "caption": "A train. "}, {"image_id": 7, "id": 2, "caption": "x"},
                        {"image_id": 42, "id": 3, "caption": "A locomotive."}]}))
    ds = load_dataset(f)
    assert ds.format == "coco" and [it.image_id for it in ds.items] == ["7", "42"]
    assert ds.items[1].references == ["A train.", "A locomotive."]
    assert ds.items[1].path.name == "COCO_val2014_000000000042.jpg"


def test_finecapeval_criteria(tmp_path):
    f = tmp_path / "FineCapEval.csv"
    f.write_text("image,caption,background,object,relation\n"
                 'img1.jpg,"A man rides a bike on a road.",road\\;blue sky,man\\;red bike,man riding bike\n'
                 "img1.jpg,A cyclist on the street.,street,cyclist,\n"
                 "img2.jpg,Two dogs play.,grass field,two dogs,dogs playing\n")
    ds = load_dataset(f)
    assert ds.format == "finecapeval" and len(ds) == 2
    one = ds.items[0]
    assert one.image_id == "img1" and one.references == ["A man rides a bike on a road.", "A cyclist on the street."]
    assert one.criteria["background"] == ["road", "blue sky", "street"]
    assert one.criteria["relation"] == ["man riding bike"]


def test_jsonl_generic(tmp_path):
    f = tmp_path / "references.jsonl"
    f.write_text(json.dumps({"image": "imgs/a.png", "captions": ["one", "two"], "split": "test"}) + "\n\n"
                 + json.dumps({"file": "b.png", "caption": "three", "split": "train"}) + "\n")
    ds = load_dataset(f)
    assert [it.path for it in ds.items] == [tmp_path / "imgs" / "a.png", tmp_path / "b.png"]
    assert ds.items[1].references == ["three"]
    assert len(load_dataset(f, split="test")) == 1
    f.write_text('{"image": "a.png"}\n')
    with pytest.raises(DatasetError, match=r"references.jsonl:1: .*captions"):
        load_dataset(f)
