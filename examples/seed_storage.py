# The seed's file-operation example (upload_file / download_file, verbatim), with a main()
# that runs them against the worker's own embedded node. Run from a scratch directory:
# it writes data.txt there.
# ruff: noqa: I001, W293, ASYNC230
import asyncio
from proto import taskworker_pb2
from taskworker import TaskWorker

worker = TaskWorker("worker_001")

# 上傳文件
async def upload_file():
    with open("data.txt", "rb") as f:
        content = f.read()
    
    response = await worker.storage.Push(
        taskworker_pb2.PushRequest(
            file_data=content,
            filename="data.txt",
            user_id="user123"
        )
    )
    return response.file_id

# 下載文件
async def download_file(file_id):
    response = await worker.storage.Get(
        taskworker_pb2.GetRequest(
            file_id=file_id,
            user_id="user123"
        )
    )
    return response.file_data

async def main():
    with open("data.txt", "wb") as f:
        f.write(b"Hello from HiveMind storage!")
    await worker.start_server(port=50052, wait=False)
    try:
        file_id = await upload_file()
        print(file_id, (await download_file(file_id)).decode())
    finally:
        await worker.stop_server()

if __name__ == "__main__":
    asyncio.run(main())
