"""The round store's contract: what every backend MUST do, run against each backend.

`RoundStoreContract` states the contract as tests over a ``store`` fixture; a
backend subclasses it and provides the fixture (Flower's state tests follow the
same pattern). Redis is the one backend today, run against the embedded server.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from fedmesh.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from fedmesh.store import TERMINAL, Phase, Receipt, ReceiptOutcome, RoundStore, keys

RUN = "run-contract"


def receipt(node: str, digest: str = "d1", samples: int = 10) -> Receipt:
    return Receipt(
        node, digest, num_samples=samples, payload_bytes=100, local_loss=0.25, received_unix_ms=7
    )


async def open_round(
    store: RoundStore, round_no: int = 1, participants: tuple[str, ...] = ("a", "b", "c")
) -> None:
    await store.create(RUN, round_no, participants, deadline_unix_ms=5_000, opened_unix_ms=1_000)
    await store.transition(RUN, round_no, Phase.PENDING, Phase.COLLECTING)


class RoundStoreContract:
    """Every round store MUST behave like this."""

    @pytest.fixture
    def store(self) -> RoundStore:
        raise NotImplementedError("a backend's test class provides the store")

    # Creating and reading

    async def test_create_stores_a_pending_round_with_everything_given(
        self, store: RoundStore
    ) -> None:
        fields = {"base_model": json.dumps({"name": "m", "version": 3}), "note": "ünïcode ✓"}

        await store.create(RUN, 1, ["b", "a"], 5_000, 1_000, fields)
        record = await store.get(RUN, 1)

        assert (record.run_id, record.round_no, record.phase) == (RUN, 1, Phase.PENDING)
        assert record.participants == frozenset({"a", "b"})
        assert (record.deadline_unix_ms, record.opened_unix_ms) == (5_000, 1_000)
        assert dict(record.fields) == fields
        assert record.receipts == {}
        assert await store.exists(RUN, 1)

    async def test_a_round_without_participants_can_be_created(self, store: RoundStore) -> None:
        await store.create(RUN, 1, [], 1_000, 1_000)

        assert (await store.get(RUN, 1)).participants == frozenset()

    async def test_creating_an_existing_round_is_refused_and_keeps_the_first(
        self, store: RoundStore
    ) -> None:
        await store.create(RUN, 1, ["a"], 5_000, 1_000, {"k": "first"})

        with pytest.raises(AlreadyExists, match=f"^round 1 of run {RUN} already exists$"):
            await store.create(RUN, 1, ["b"], 9_000, 2_000, {"k": "second"})

        record = await store.get(RUN, 1)
        assert (record.participants, record.deadline_unix_ms) == (frozenset({"a"}), 5_000)
        assert record.fields["k"] == "first"

    async def test_an_unknown_round_is_not_found(self, store: RoundStore) -> None:
        with pytest.raises(NotFound, match=f"^round 4 of run {RUN} does not exist$"):
            await store.get(RUN, 4)
        assert not await store.exists(RUN, 4)

    async def test_runs_and_rounds_are_independent(self, store: RoundStore) -> None:
        await store.create(RUN, 1, ["a"], 5_000, 1_000)
        await store.create(RUN, 2, ["b"], 6_000, 1_000)
        await store.create("other", 1, ["c"], 7_000, 1_000)

        await store.transition(RUN, 2, Phase.PENDING, Phase.COLLECTING)

        assert (await store.get(RUN, 1)).phase is Phase.PENDING
        assert (await store.get(RUN, 2)).phase is Phase.COLLECTING
        assert (await store.get("other", 1)).participants == frozenset({"c"})

    # Transitions

    async def test_the_happy_path_moves_phase_by_phase_and_reports_the_previous_one(
        self, store: RoundStore
    ) -> None:
        await store.create(RUN, 1, ["a"], 5_000, 1_000)

        steps = [
            (Phase.PENDING, Phase.COLLECTING),
            (Phase.COLLECTING, Phase.AGGREGATING),
            (Phase.AGGREGATING, Phase.COMPLETED),
        ]
        previous = [await store.transition(RUN, 1, old, new) for old, new in steps]

        assert previous == [Phase.PENDING, Phase.COLLECTING, Phase.AGGREGATING]
        assert (await store.get(RUN, 1)).phase is Phase.COMPLETED

    async def test_a_transition_writes_its_fields_with_the_phase(self, store: RoundStore) -> None:
        await open_round(store)

        await store.transition(
            RUN, 1, Phase.COLLECTING, Phase.FAILED, {"failure_reason": "quorum missed: 1 of 3"}
        )

        record = await store.get(RUN, 1)
        assert record.phase is Phase.FAILED
        assert record.fields["failure_reason"] == "quorum missed: 1 of 3"

    async def test_a_transition_may_accept_several_phases(self, store: RoundStore) -> None:
        await open_round(store)
        any_open = [Phase.PENDING, Phase.COLLECTING, Phase.AGGREGATING]

        previous = await store.transition(RUN, 1, any_open, Phase.FAILED)

        assert previous is Phase.COLLECTING

    async def test_a_transition_from_another_phase_is_aborted_and_changes_nothing(
        self, store: RoundStore
    ) -> None:
        await open_round(store)

        with pytest.raises(
            Aborted,
            match=f"^round 1 of run {RUN} is COLLECTING; expected AGGREGATING or PENDING to "
            "move it to COMPLETED$",
        ):
            await store.transition(
                RUN, 1, [Phase.AGGREGATING, Phase.PENDING], Phase.COMPLETED, {"x": "1"}
            )

        record = await store.get(RUN, 1)
        assert record.phase is Phase.COLLECTING
        assert "x" not in record.fields

    @pytest.mark.parametrize("closed", sorted(TERMINAL))
    async def test_a_closed_round_never_moves_again(self, store: RoundStore, closed: Phase) -> None:
        await open_round(store)
        await store.transition(RUN, 1, Phase.COLLECTING, closed)

        for phase in Phase:
            if phase is not closed:
                with pytest.raises(Aborted):
                    await store.transition(RUN, 1, phase, Phase.COLLECTING)
        assert (await store.get(RUN, 1)).phase is closed

    async def test_a_transition_of_an_unknown_round_is_not_found(self, store: RoundStore) -> None:
        with pytest.raises(NotFound, match=f"^round 9 of run {RUN} does not exist$"):
            await store.transition(RUN, 9, Phase.PENDING, Phase.COLLECTING)
        assert not await store.exists(RUN, 9)

    async def test_of_concurrent_writers_exactly_one_wins(self, store: RoundStore) -> None:
        await open_round(store)

        outcomes = await asyncio.gather(
            *(
                store.transition(RUN, 1, Phase.COLLECTING, new, {"winner": new.value})
                for new in [Phase.AGGREGATING, Phase.FAILED] * 5
            ),
            return_exceptions=True,
        )

        assert sum(1 for o in outcomes if o is Phase.COLLECTING) == 1
        assert sum(1 for o in outcomes if isinstance(o, Aborted)) == 9
        record = await store.get(RUN, 1)
        assert record.fields["winner"] == record.phase.value

    # Deadlines

    async def test_a_round_is_due_from_its_deadline_until_it_closes(
        self, store: RoundStore
    ) -> None:
        await open_round(store)

        assert await store.due(4_999) == []
        assert await store.due(5_000) == [(RUN, 1)]
        await store.transition(RUN, 1, Phase.COLLECTING, Phase.AGGREGATING)
        assert await store.due(5_000) == [(RUN, 1)]
        await store.transition(RUN, 1, Phase.AGGREGATING, Phase.COMPLETED)
        assert await store.due(10**13) == []

    async def test_a_new_deadline_replaces_the_old_one(self, store: RoundStore) -> None:
        await open_round(store)

        await store.set_deadline(RUN, 1, 9_000)

        assert (await store.get(RUN, 1)).deadline_unix_ms == 9_000
        assert await store.due(8_999) == []
        assert await store.due(9_000) == [(RUN, 1)]

    async def test_due_rounds_come_earliest_first_up_to_the_limit(self, store: RoundStore) -> None:
        for round_no, deadline in [(1, 3_000), (2, 1_000), (3, 2_000)]:
            await store.create(RUN, round_no, ["a"], deadline, 0)

        assert await store.due(10_000) == [(RUN, 2), (RUN, 3), (RUN, 1)]
        assert await store.due(10_000, limit=2) == [(RUN, 2), (RUN, 3)]

    # Receipts

    async def test_a_receipt_is_recorded_once_per_node_and_digest(self, store: RoundStore) -> None:
        await open_round(store)

        first = await store.record_receipt(RUN, 1, receipt("a"))
        again = await store.record_receipt(RUN, 1, receipt("a"))

        assert (first, again) == (ReceiptOutcome.ACCEPTED, ReceiptOutcome.DUPLICATE)
        assert (await store.get(RUN, 1)).receipts == {"a": receipt("a")}

    async def test_a_different_update_from_the_same_node_is_refused(
        self, store: RoundStore
    ) -> None:
        await open_round(store)
        await store.record_receipt(RUN, 1, receipt("a", "d1"))

        with pytest.raises(
            AlreadyExists,
            match=f"^node 'a' already submitted update d1 for round 1 of run {RUN}; "
            "refusing a different update d2$",
        ):
            await store.record_receipt(RUN, 1, receipt("a", "d2"))
        assert (await store.get(RUN, 1)).receipts["a"].digest == "d1"

    async def test_a_receipt_from_a_node_not_selected_is_refused(self, store: RoundStore) -> None:
        await open_round(store)

        with pytest.raises(
            FailedPrecondition, match=f"^node 'z' was not selected for round 1 of run {RUN}$"
        ):
            await store.record_receipt(RUN, 1, receipt("z"))
        assert (await store.get(RUN, 1)).receipts == {}

    @pytest.mark.parametrize("phase", [Phase.PENDING, Phase.AGGREGATING, Phase.FAILED])
    async def test_a_receipt_outside_collection_is_refused(
        self, store: RoundStore, phase: Phase
    ) -> None:
        await store.create(RUN, 1, ["a"], 5_000, 1_000)
        path = {
            Phase.PENDING: [],
            Phase.AGGREGATING: [Phase.COLLECTING, Phase.AGGREGATING],
            Phase.FAILED: [Phase.FAILED],
        }[phase]
        previous = Phase.PENDING
        for step in path:
            await store.transition(RUN, 1, previous, step)
            previous = step

        with pytest.raises(
            FailedPrecondition, match=f"^round 1 of run {RUN} is {phase.value}, not COLLECTING$"
        ):
            await store.record_receipt(RUN, 1, receipt("a"))
        assert (await store.get(RUN, 1)).receipts == {}

    async def test_a_receipt_for_an_unknown_round_is_not_found(self, store: RoundStore) -> None:
        with pytest.raises(NotFound, match=f"^round 2 of run {RUN} does not exist$"):
            await store.record_receipt(RUN, 2, receipt("a"))

    async def test_concurrent_uploads_are_each_counted_exactly_once(
        self, store: RoundStore
    ) -> None:
        nodes = tuple(f"n{i}" for i in range(20))
        await open_round(store, participants=nodes)

        outcomes = await asyncio.gather(
            *(store.record_receipt(RUN, 1, receipt(n, f"d-{n}")) for n in nodes for _ in range(3))
        )

        assert outcomes.count(ReceiptOutcome.ACCEPTED) == 20
        assert outcomes.count(ReceiptOutcome.DUPLICATE) == 40
        receipts = (await store.get(RUN, 1)).receipts
        assert {n: r.digest for n, r in receipts.items()} == {n: f"d-{n}" for n in nodes}

    async def test_a_closed_round_keeps_its_receipts(self, store: RoundStore) -> None:
        await open_round(store)
        await store.record_receipt(RUN, 1, receipt("a"))
        await store.record_receipt(RUN, 1, receipt("b", "d2", samples=30))

        await store.transition(RUN, 1, Phase.COLLECTING, Phase.AGGREGATING)
        await store.transition(RUN, 1, Phase.AGGREGATING, Phase.COMPLETED)

        receipts = (await store.get(RUN, 1)).receipts
        assert receipts == {"a": receipt("a"), "b": receipt("b", "d2", samples=30)}

    async def test_can_submit_says_what_the_node_already_sent(self, store: RoundStore) -> None:
        await open_round(store)
        await store.record_receipt(RUN, 1, receipt("a", "d1"))

        assert await store.check_can_submit(RUN, 1, "a") == "d1"
        assert await store.check_can_submit(RUN, 1, "b") is None
        with pytest.raises(FailedPrecondition, match="node 'z' was not selected"):
            await store.check_can_submit(RUN, 1, "z")
        await store.transition(RUN, 1, Phase.COLLECTING, Phase.AGGREGATING)
        with pytest.raises(FailedPrecondition, match="is AGGREGATING, not COLLECTING"):
            await store.check_can_submit(RUN, 1, "b")

    async def test_a_dropped_receipt_lets_the_node_send_again(self, store: RoundStore) -> None:
        await open_round(store)
        await store.record_receipt(RUN, 1, receipt("a", "d1"))

        await store.drop_receipt(RUN, 1, "a")

        assert await store.check_can_submit(RUN, 1, "a") is None
        assert await store.record_receipt(RUN, 1, receipt("a", "d2")) is ReceiptOutcome.ACCEPTED
        assert (await store.get(RUN, 1)).receipts["a"].digest == "d2"


class TestRedisRoundStore(RoundStoreContract):
    """The Redis round store, against the embedded Redis (or FEDMESH_REDIS_URL)."""

    @pytest.fixture
    def store(self, redis_client: aioredis.Redis) -> RoundStore:
        return RoundStore(redis_client)

    async def test_a_rounds_keys_share_the_runs_hash_tag(
        self, store: RoundStore, redis_client: aioredis.Redis
    ) -> None:
        await open_round(store)
        await store.record_receipt(RUN, 1, receipt("a"))

        round_keys = {str(k) for k in await redis_client.keys(f"{keys.run_tag(RUN)}*")}

        assert round_keys == {
            keys.round_key(RUN, 1),
            keys.participants_key(RUN, 1),
            keys.receipts_key(RUN, 1),
        }
        assert all(f"{{run:{RUN}}}" in k for k in round_keys)
