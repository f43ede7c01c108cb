import pytest

from pipeline.config import load_settings
from pipeline.lake.layout import Layout


def test_defaults_are_embedded_engines():
    s = load_settings(environ={})
    assert s.spark.master == "local[*]"
    assert s.mlflow_uri.startswith("sqlite:///") and s.mlflow_uri.endswith(".state/mlflow.db")
    assert s.paths.data_root == "data"


def test_environment_then_overrides_win():
    env = {"SPARK_MASTER": "spark://m:7077", "EPOCHS": "4", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
           "DOWNLOAD_ORIGINALS": "true", "WIT_MIME_TYPES": "image/jpeg, image/webp"}
    s = load_settings({"train.epochs": "2"}, environ=env)
    assert s.spark.master == "spark://m:7077"
    assert s.train.epochs == 2  # CLI beats environment
    assert s.mlflow_uri == "http://mlflow:5000"
    assert s.shard.originals is True
    assert s.wit.mime_types == ("image/jpeg", "image/webp")


def test_pipeline_overrides_env_reaches_every_stage():
    s = load_settings(environ={"PIPELINE_OVERRIDES": '{"label.taxonomy": "v1.4", "train.epochs": "3"}'})
    assert (s.label.taxonomy, s.train.epochs) == ("v1.4", 3)
    assert load_settings({"train.epochs": "5"}, environ={"PIPELINE_OVERRIDES": '{"train.epochs": "3"}'}).train.epochs == 5


@pytest.mark.parametrize("bad", [{"train.nope": "1"}, {"nosection.x": "1"}, {"epochs": "1"}])
def test_unknown_settings_are_refused(bad):
    with pytest.raises(ValueError, match="setting|section.field"):
        load_settings(bad, environ={})


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        load_settings({"train.epochs": "many"}, environ={})
    with pytest.raises(ValueError, match="boolean"):
        load_settings({"shard.originals": "perhaps"}, environ={})


def test_layout_is_keyed_by_dump_date_and_labeling():
    s = load_settings({"paths.data_root": "s3://bucket/lake", "paths.dump_date": "20250301",
                       "label.taxonomy": "v1.4", "label.heuristics": "headJ+depth"}, environ={})
    layout = Layout.from_settings(s)
    assert layout.dump("page") == "data/sample/dumps/commonswiki-20250301-page.sql.gz"
    assert layout.category_depth == "s3://bucket/lake/20250301/graph/category_depth"
    assert layout.labels("file_labels") == "s3://bucket/lake/20250301/labels/v1.4/headJ+depth/file_labels"
    assert layout.image_index == "s3://bucket/lake/20250301/image_index/v1.4/headJ+depth"
