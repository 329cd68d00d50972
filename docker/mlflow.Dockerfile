# The MLflow tracking server of the cluster: MLflow (the version raygrid pins)
# with the PostgreSQL driver and the S3 client for the artifact store.
#   docker build -f docker/mlflow.Dockerfile -t raygrid-mlflow docker/
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary==2.9.13 boto3==1.44.5
