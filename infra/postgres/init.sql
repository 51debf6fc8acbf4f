-- One PostgreSQL for both servers: a database each (run once, on an empty data volume).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
