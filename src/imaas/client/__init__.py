"""The Python SDK: ``Client`` and ``AsyncClient`` over httpx.

It imports only ``imaas.schemas`` and ``imaas.errors``, so ``pip install imaas`` without
extras is enough to call a server. Every call but the health probes needs an API key
(``api_key=``, sent as ``Authorization: Bearer``); it never appears in a repr or an error.

Example::

    from imaas.client import Client

    with Client("http://127.0.0.1:8000", api_key=os.environ["IMAAS_API_KEY"]) as c:
        result = c.predict("mobilenet-v2", "cat.jpg", top_k=3)
        print(result.results[0].predictions[0].label)
"""

from imaas.client.asynchronous import AsyncClient
from imaas.client.collections import Item
from imaas.client.sync import Client

__all__ = ["AsyncClient", "Client", "Item"]
