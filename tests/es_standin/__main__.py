from tests.es_standin.server import main

main()
