"""The worklist is rebuilt after every scored patient, whatever happens to its results."""

import dagster as dg

from cass_pipeline.definitions import build_definitions
from cass_pipeline.defs.assets import prediction


def test_every_scoring_and_delivery_rebuilds_the_worklist_once():
    monitored = [prediction.patient_prediction.key, prediction.dicom_results.key]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(prediction.inbox_patients.name, ["P-1", "P-2"])

        def look(cursor):
            context = dg.build_multi_asset_sensor_context(
                monitored_assets=monitored,
                instance=instance,
                cursor=cursor,
                definitions=build_definitions(),
            )
            return prediction.worklist_sensor(context), context.cursor

        result, cursor = look(None)
        assert isinstance(result, dg.SkipReason)
        # P-1 scored, its results never delivered (the PACS down: dicom_results failed)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(prediction.patient_prediction.key, partition="P-1")
        )
        result, cursor = look(cursor)
        assert isinstance(result, dg.RunRequest) and result.job_name in (None, "rebuild_worklist")
        result, cursor = look(cursor)
        assert isinstance(result, dg.SkipReason)  # once per materialisation
        instance.report_runless_asset_event(
            dg.AssetMaterialization(prediction.dicom_results.key, partition="P-2")
        )
        result, _ = look(cursor)
        assert isinstance(result, dg.RunRequest)
