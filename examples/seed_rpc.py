# The seed's "remote function calls" example, with the basic setup's main() to serve it.
# ruff: noqa: I001, W291
import asyncio
from taskworker import TaskWorker

worker = TaskWorker("worker_001")

@worker.function("calculate")
def calculate_result(x, y):
    return x + y

@worker.function("process_data")  
def process_data(data):
    # 處理數據邏輯
    return {"processed": True, "result": data}

async def main():
    await worker.start_server(port=50052)

if __name__ == "__main__":
    asyncio.run(main())
