# The seed's "basic setup" example, verbatim (it must run unchanged).
# ruff: noqa: I001
import asyncio
from taskworker import TaskWorker

# 創建 TaskWorker 實例
worker = TaskWorker("worker_001")

# 註冊函數
@worker.function("hello")
def hello_world():
    return "Hello from HiveMind!"

@worker.function("add")
def add_numbers(a, b):
    return a + b

async def main():
    # 啟動服務器
    await worker.start_server(port=50052)

if __name__ == "__main__":
    asyncio.run(main())
