"""Vector collections: stored embeddings searched by similarity (``store.VectorStore``;
``lance.LanceStore`` keeps them in LanceDB tables on a folder or an S3-compatible bucket)."""
