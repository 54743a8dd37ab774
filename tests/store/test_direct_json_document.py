"""``_store.direct_json``: the stored bytes straight to the document ``feast serve`` answers.

* ``column_values`` gives Feast's ``convert_response_to_dict`` values for one column's stored
  bytes: plain kinds read in one parse, unset values (``None`` / empty) as ``null`` in place,
  everything else (bytes, lists, non-finite floats, bytes that are no ``Value``) through
  Feast's converter.
* ``document`` of a prepared request's replies is exactly ``convert_response_to_dict`` of the
  message ``response_builder.direct_response`` builds from the same replies, and of Feast's
  own store's answer (the differential ``api`` repos, real server).
* ``answer`` plans, fetches and answers a request through the store, counts every value as
  PRESENT per view, and says ``None`` for a request the direct path cannot take.

``tests/serve/test_direct_json.py`` runs every request shape through the serving path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from differential_kit import DIFFERENTIAL_MARKS, same_json
from differential_requests import REQUESTS, request_args
from feast.feature_server_utils import convert_response_to_dict
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import DoubleList, Value

from feast_dragonfly._store import direct_json, direct_read, response_builder


def feasts_values(raws: list[bytes | None]) -> list[Any]:
    response = GetOnlineFeaturesResponse()
    response.results.add().values.extend(Value.FromString(raw or b"") for raw in raws)
    return convert_response_to_dict(response)["results"][0]["values"]


def raw(**kind: Any) -> bytes:
    return Value(**kind).SerializeToString()


# --------------------------------------------------------------------------- columns


@pytest.mark.parametrize(
    "raws",
    [
        [raw(int64_val=5), raw(int64_val=-(2**63)), raw(int64_val=0)],
        [raw(string_val="é"), raw(string_val=""), raw(string_val="🐉")],
        [raw(double_val=0.5), raw(double_val=-0.0)],
        [raw(float_val=0.25), raw(float_val=3.4e38)],
        [raw(bool_val=True), raw(bool_val=False)],
        [raw(int32_val=7), None, raw(int32_val=-1), b""],
        [None, b""],
        [raw(double_val=float("nan")), raw(double_val=1.0)],
        [raw(double_val=float("inf")), None],
        [raw(bytes_val=b"\x00\xff"), raw(bytes_val=b"")],
        [raw(double_list_val=DoubleList(val=[1.0, 2.0])), raw(double_val=1.0)],
        [raw(int64_val=1), raw(string_val="mixed")],
        [raw(unix_timestamp_val=1_700_000_000)],
    ],
)
def test_column_values_are_feasts_conversion(raws):
    assert same_json(direct_json.column_values(raws), feasts_values(raws))


def test_unset_values_are_null_in_place():
    raws = [raw(int64_val=1), None, raw(int64_val=3), b""]
    assert direct_json.column_values(raws) == [1, None, 3, None]


def test_block_values_cut_one_parse_into_columns():
    columns = [
        [raw(int64_val=1), raw(int64_val=2)],
        [raw(string_val="a"), raw(string_val="b")],
        [raw(int64_val=3), raw(int64_val=4)],
    ]
    assert direct_json.block_values(columns, 2) == [[1, 2], ["a", "b"], [3, 4]]
    columns[1][1] = None  # an unset value: column by column, the same answers
    assert direct_json.block_values(columns, 2) == [[1, 2], ["a", None], [3, 4]]


# --------------------------------------------------------------------------- documents

DOCUMENTED = [
    "one view, all features",
    "typed lists, bytes, timestamps, nulls",
    "exotic kinds, long values, odd event times",
    "missing and duplicate entities",
    "all entities missing",
    "five views sharing the driver",
    "composite with each entity alone",
    "columnar entity rows",
    "service: aliased view, full names",
    "conversion quirks",
]


def _prepared(store, label: str) -> direct_read.Prepared:
    args = request_args(store, REQUESTS[label])
    prepared = store._get_provider().online_store._direct_request(
        config=store.config, registry=store.registry, project=store.project, **args
    )
    assert prepared is not None, f"{label}: not a direct-path shape"
    return prepared


class TestDocuments:
    """On the differential ``api`` repos (a real server)."""

    pytestmark = DIFFERENTIAL_MARKS

    @pytest.mark.parametrize("label", DOCUMENTED)
    def test_the_document_is_feasts_conversion_of_the_same_answer(self, api_data, label):
        store = api_data.stores["ours"]
        prepared = _prepared(store, label)
        replies = store._get_provider().online_store._fetch(store.config, prepared.read_plan)
        document = direct_json.document(prepared, replies)
        built = response_builder.direct_response(prepared, replies)
        assert same_json(document, convert_response_to_dict(built))
        feast = api_data.stores["feast"]
        feasts = feast.get_online_features(**request_args(feast, REQUESTS[label]))
        assert same_json(document, convert_response_to_dict(feasts.proto))

    def test_answer_reads_through_the_store_and_counts_every_value(self, api_data, monkeypatch):
        counted: list[tuple[str, int, int]] = []
        monkeypatch.setattr(direct_json, "track_statuses", lambda *args: counted.append(args))
        store = api_data.stores["ours"]
        online_store = store._get_provider().online_store
        plan = direct_read.plan_request(
            store.config,
            store.registry,
            store.project,
            ["driver_stats:trips", "driver_stats:rank"],
            False,
        )
        entities = {"driver_id": [1, 9999, 1]}
        document = asyncio.run(direct_json.answer(online_store, store.config, plan, entities))
        feasts = api_data.stores["feast"].get_online_features(
            features=["driver_stats:trips", "driver_stats:rank"],
            entity_rows=[{"driver_id": i} for i in entities["driver_id"]],
        )
        assert document == convert_response_to_dict(feasts.proto)
        assert counted == [("driver_stats", 2 * 3, 0)]

        unknown_key = {"driver_id": [1], "courier_id": [2]}
        assert (
            asyncio.run(direct_json.answer(online_store, store.config, plan, unknown_key)) is None
        )
        assert len(counted) == 1  # nothing answered, nothing counted
