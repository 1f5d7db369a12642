import asyncio

from fedmesh.stopping import stop


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed: list[bool] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed.append(True)  # what Python 3.11's wait_for sometimes does
        await asyncio.sleep(10)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)

    await stop(task, recancel_after_s=0.05)

    assert swallowed == [True]
    assert task.cancelled()


async def test_clean_up_of_a_task_already_cancelled_is_not_interrupted() -> None:
    cleaned: list[str] = []

    async def with_clean_up() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.1)  # e.g. releasing a lease
            cleaned.append("done")

    task = asyncio.create_task(with_clean_up())
    await asyncio.sleep(0)
    task.cancel()

    await stop(task, recancel_after_s=1.0)

    assert cleaned == ["done"]


async def test_a_finished_task_is_left_as_it_is() -> None:
    async def quick() -> int:
        return 3

    task = asyncio.create_task(quick())
    await task

    await stop(task)

    assert task.result() == 3
