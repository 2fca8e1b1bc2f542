"""Reading VOC XML, COCO JSON and CSV annotations; label mapping; scoring one image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densecls.classes import imagenet_categories
from densecls.errors import DenseclsError
from densecls.evaluate import load_annotations, map_labels, score_image
from densecls.evaluate.metrics import normalise

VOC = """<annotation>
  <filename>{name}</filename>
  <size><width>100</width><height>80</height><depth>3</depth></size>
  <object><name>cat</name><bndbox>
    <xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>60</ymax></bndbox></object>
  <object><name>cat</name><bndbox><xmin>5</xmin><ymin>x</ymin><xmax>9</xmax><ymax>9</ymax>
    </bndbox></object>
  <object><name>espresso</name></object>
</annotation>
"""


def test_voc_boxes_become_half_open_and_bad_objects_are_named(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(VOC.format(name="a.jpg"))
    truth = load_annotations(path)
    (ann,) = truth.images
    assert ann.image == "a.jpg"
    assert [o.box for o in ann.objects] == [(10.0, 20.0, 40.0, 60.0)]
    texts = [p.text() for p in truth.problems]
    assert texts[0].startswith(f"{path}: object 2 (label 'cat'): ")
    assert texts[1] == f"{path}: object 3 (label 'espresso'): it has no <bndbox>; " + (
        "give xmin, ymin, xmax, ymax"
    )
    assert len(texts) == 2


def test_a_folder_of_voc_files_and_imagenet_stems(tmp_path: Path) -> None:
    for stem in ("ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"):
        (tmp_path / f"{stem}.xml").write_text(VOC.format(name=stem))
    (tmp_path / "broken.xml").write_text("<annotation>")
    truth = load_annotations(tmp_path)
    assert len(truth.images) == 2
    assert any(p.where == "file" and "broken.xml" in p.source for p in truth.problems)
    # ImageNet's files name the image without its extension: the stem matches.
    found = truth.find(Path("val/ILSVRC2012_val_00000002.JPEG"))
    assert found is not None and found.image == "ILSVRC2012_val_00000002"
    assert truth.find(Path("other.jpg")) is None


def test_coco_boxes_polygons_and_rle(tmp_path: Path) -> None:
    data = {
        "images": [{"id": 1, "file_name": "pics/b.png", "width": 20, "height": 10}],
        "categories": [{"id": 7, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 1, 6, 4],
             "segmentation": [[2, 1, 8, 1, 8, 5, 2, 5]]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0, 0, 3, 3],
             "segmentation": {"counts": "abc", "size": [10, 20]}},
            {"id": 3, "image_id": 1, "category_id": 99, "bbox": [0, 0, 3, 3]},
            {"id": 4, "image_id": 1, "category_id": 7, "bbox": [0, 0, 0, 3]},
        ],
    }  # fmt: skip
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(data))
    truth = load_annotations(path)
    (ann,) = truth.images
    first, second = ann.objects
    assert first.box == (2.0, 1.0, 8.0, 5.0) and first.has_mask
    mask = first.mask((10, 20))
    # Pixels whose centres are inside, as for boxes: rows 1-4, columns 2-7.
    assert mask is not None and mask[1:5, 2:8].all() and mask.sum() == 4 * 6
    assert second.box == (0.0, 0.0, 3.0, 3.0) and not second.has_mask
    problems = {p.where: p.message for p in truth.problems}
    assert "RLE masks are not read" in problems["annotation 2 (label 'cat')"]
    assert "category_id 99" in problems["annotation 3"]
    assert "empty" in problems["annotation 4 (label 'cat')"]
    assert truth.find(Path("pics/b.png")) is ann


def test_polygon_masks_take_pixel_centres() -> None:
    from densecls.evaluate import AnnotatedObject
    from densecls.evaluate.metrics import box_mask

    # A triangle over pixels 0..9: the centre (x + 0.5, y + 0.5) is inside below the diagonal.
    tri = AnnotatedObject("t", (0, 0, 10, 10), "t", ((0, 0, 10, 10, 0, 10),)).mask((10, 10))
    assert tri.sum() == 45 and tri[9, 0] and not tri[0, 9]
    box = (2.3, 1.2, 8.6, 5.5)
    square = AnnotatedObject("s", box, "s", ((2.3, 1.2, 8.6, 1.2, 8.6, 5.5, 2.3, 5.5),))
    assert np.array_equal(square.mask((8, 12)), box_mask(box, (8, 12)))


def test_csv_rows_masks_and_errors(tmp_path: Path) -> None:
    Image.fromarray(np.pad(np.full((2, 3), 255, np.uint8), ((1, 1), (1, 1)))).save(
        tmp_path / "m.png"
    )
    path = tmp_path / "ann.csv"
    path.write_text(
        "image,label,x0,y0,x1,y1,mask\n"
        "c.png,espresso,1,1,4,3,m.png\n"
        "c.png,cat,5,5,3,8,\n"
        "c.png,cat,1,2\n"
        "sub/d.png,281,0,0,2,2,\n"
    )
    truth = load_annotations(path)
    c, d = truth.images
    (obj,) = c.objects
    assert obj.box == (1.0, 1.0, 4.0, 3.0) and obj.mask_path == tmp_path / "m.png"
    assert obj.mask((4, 5)).sum() == 6
    assert [p.where for p in truth.problems] == ["row 3 (label 'cat')", "row 4 (label 'cat')"]
    # A path in the CSV is relative to the CSV.
    assert truth.find(tmp_path / "sub" / "d.png") is d


def test_missing_and_unknown_annotation_files(tmp_path: Path) -> None:
    with pytest.raises(DenseclsError, match="no such file or folder"):
        load_annotations(tmp_path / "nope.xml")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DenseclsError, match=r"unknown format \.txt"):
        load_annotations(tmp_path / "a.txt")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\n")
    with pytest.raises(DenseclsError, match=r"bad.csv: file: header file,class"):
        load_annotations(bad)


def test_labels_map_by_name_index_group_and_wordnet_id() -> None:
    cats = imagenet_categories()
    mapping = map_labels(["espresso", "281", "cat", "n02123045", "zebra crossing"], cats)
    espresso, index, group, wnid, unknown = mapping
    assert espresso.selection.indices == (967,)
    assert index.selection.indices == (281,)
    assert group.selection.kind == "group" and 281 in group.selection.indices
    assert wnid.selection.indices == (281,) and cats[281] == "tabby"
    assert unknown.selection is None and "no category or WordNet group" in unknown.problem
    assert unknown.text().startswith("label 'zebra crossing': ")
    assert espresso.text() == "label 'espresso' → espresso [name]"


def test_score_image_groups_objects_by_label_and_reports_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "ann.csv"
    path.write_text(
        "image,label,x0,y0,x1,y1\n"
        "x.png,cat,0,0,10,10\n"
        "x.png,cat,30,30,40,40\n"
        "x.png,cat,30,30,90,40\n"
        "x.png,zebra,0,0,5,5\n"
    )
    (ann,) = load_annotations(path).images
    heat = np.zeros((50, 50), dtype=np.float32)
    heat[32:38, 32:38] = 1.0
    targets, problems = score_image(ann, (50, 50), {"cat": heat}, tolerance=0)
    assert [p.where for p in problems] == ["row 4 (label 'cat')", "row 5 (label 'zebra')"]
    assert "lies outside the 50×50 image" in problems[0].message
    (target,) = targets
    first, second = target.objects
    assert not first.hit and second.hit and target.hit  # any instance counts
    assert first.energy == 0.0 and second.energy == pytest.approx(1.0)
    # The peak's component is (32, 32, 38, 38): IoU 36 / 100 with the second box.
    assert second.ious[0] == pytest.approx(0.36) and first.best_iou == 0.0
    assert target.ious == second.ious
    assert target.pxap is None  # boxes only
    assert normalise(heat).max() == 1.0
